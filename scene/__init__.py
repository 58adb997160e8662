"""Blender scene builders (the only place that imports bpy, besides operators/ and panels/).

:mod:`.importer` is the entry point (``import_prediction``, ``import_result_file``,
``ImportOptions``); :mod:`.conventions` documents and implements the OpenCV-to-Blender mapping;
:mod:`.points`, :mod:`.planes`, :mod:`.cameras`, :mod:`.footage` build the parts; :mod:`.compat`
hides Blender-version differences.
"""
