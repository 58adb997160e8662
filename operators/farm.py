"""Submit to Flamenco: the panel's shot planned into the farm folder and sent to a Flamenco v3 manager."""

from __future__ import annotations

import os
import re
import time

import bpy
from bpy.types import Operator

from ..da3_blender.errors import BadInputError, DA3Error
from ..preferences import get_preferences
from . import session


class DA3_OT_submit_flamenco(Operator):
    """Plan this shot into the farm folder and submit it to the Flamenco manager (both set in the preferences): its chunks run on the farm's workers, which write the .blend"""

    bl_idname = "da3.submit_flamenco"
    bl_label = "Submit to Flamenco"

    @classmethod
    def poll(cls, context):
        return not session.is_running()

    def execute(self, context):
        from ..da3_blender.farm import flamenco
        from .gather import gather

        prefs = get_preferences(context)
        try:
            url, farm_root = _farm_settings(prefs)
            setup = gather(context)  # the panel's settings, checked as for Reconstruct
            if setup.remote is not None:
                raise BadInputError("Submit to Flamenco plans the shot with the local worker Python: set 'Run the "
                                    "model' to Local in the preferences")
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", setup.name)[:60] or "shot"
            plan_dir = os.path.join(farm_root, f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}")
            blend = os.path.join(plan_dir, f"{safe}.blend")
            self.report({"INFO"}, f"planning {setup.name} in {plan_dir}")
            root = (getattr(prefs, "flamenco_da3_root", "") or "").strip()
            answer, plan = flamenco.plan_and_submit(setup.job, url, plan_dir, setup.python, env=setup.env, blend=blend,
                                                    name=f"DA3 {setup.name}", da3_root=bpy.path.abspath(root) if root else None)
        except DA3Error as ex:
            context.window_manager.da3_runtime.error = f"Submit to Flamenco: {ex}"
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        runtime = context.window_manager.da3_runtime
        runtime.error = ""
        runtime.summary = (f"{plan['views']['count']} views in {len(plan['chunks'])} chunks submitted to Flamenco "
                           f"as job {answer.get('id', '?')}; the farm writes {blend}")
        self.report({"INFO"}, runtime.summary)
        return {"FINISHED"}


def _farm_settings(prefs) -> tuple[str, str]:
    url = (getattr(prefs, "flamenco_manager_url", "") or "").strip()
    if not url:
        raise BadInputError("no Flamenco manager: set its URL in the DA3 preferences (Render farm)")
    folder = (getattr(prefs, "flamenco_farm_dir", "") or "").strip()
    if not folder:
        raise BadInputError("no farm folder: set one every farm worker sees in the DA3 preferences (Render farm)")
    return url, bpy.path.abspath(folder)


CLASSES = (DA3_OT_submit_flamenco,)
