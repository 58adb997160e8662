"""Every user-facing option's choices and default, defined once.

The CLI, the worker protocol, the worker, the headless script, the panel's properties and the
preferences all derive their choices and defaults from here. Standard library only: Blender's
Python (no torch, no PIL) imports this module.
"""

from __future__ import annotations

import os

# -- model -----------------------------------------------------------------------------------------
DEFAULT_MODEL = "depth-anything/DA3-SMALL"  # Apache-2.0 weights, the fastest model; env DA3_MODEL overrides
MODEL_ENV = "DA3_MODEL"


def default_model() -> str:
    """The model used when none is named: ``$DA3_MODEL`` if set, else :data:`DEFAULT_MODEL`."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


# -- streaming (long shots: chunks aligned to each other) -------------------------------------------
CHUNK_ALIGN_CHOICES = ("auto", "sim3", "se3")  # auto: se3 for metric models, sim3 otherwise
DEFAULT_CHUNK_ALIGN = "auto"
MIN_CHUNK_SIZE = 2
