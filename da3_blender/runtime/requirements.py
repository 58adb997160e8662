"""The packages the worker's Python needs: one table, read by the managed environment, the
interpreter check, the worker's ``hello`` and the remote set-up command.

Standard library only: the worker, the SSH client and the environment code all import it.
"""

from __future__ import annotations

import re

# Must equal pyproject.toml [project].dependencies (tests/test_envs.py checks it).
DEPENDENCIES = [
    "torch==2.13.0",
    "numpy==1.26.4",
    "pillow==11.3.0",
    "safetensors==0.8.0",
    "huggingface_hub==2.4.0",
    "imageio-ffmpeg==0.8.1",
]
# Installed in the managed environment too, but not required of a custom interpreter: OpenEXR writes the
# `exr` export (its absence is a one-line error when that format is asked for).
OPTIONAL_DEPENDENCIES = ["OpenEXR==3.5.3"]
MANAGED_REQUIREMENTS = DEPENDENCIES + OPTIONAL_DEPENDENCIES
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
PYPI_INDEX = "https://pypi.org/simple"


def requirement_name(requirement: str) -> str:
    """``"torch==2.13.0"`` -> ``"torch"``."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]
