"""Flamenco v3: a planned shot as a job of the ``da3-reconstruct`` type, submitted to a manager.

The job type is ``farm/flamenco/da3_reconstruct.js`` (Flamenco names a job type after its file, ``_``
as ``-``): one ``da3-gpu`` task per chunk, then align (``da3-align``), loops (``da3-gpu``: loop chunks),
solve (``da3-align``) and ``da3-build``. A job is a POST of
JSON to the manager's ``/api/v3/jobs`` (its ``SubmittedJob`` schema: name, type, priority,
submitter_platform, settings, metadata). Paths in the settings are the submitter's; Flamenco's
two-way variables map them per platform. ``{da3_python}`` (a manager variable: the workers' Python
with torch) and ``{blender}`` (Flamenco's own) are expanded on each worker.

Standard library only: Blender's Python (the panel's *Submit to Flamenco*) imports this module.
"""

from __future__ import annotations

import json
import platform
import urllib.error
import urllib.parse
import urllib.request

from ..errors import BadInputError, DA3Error

JOB_TYPE = "da3-reconstruct"
PYTHON_VARIABLE = "{da3_python}"  # define it in flamenco-manager.yaml (variables:), per platform
BLENDER_VARIABLE = "{blender}"  # Flamenco's own variable
JOBS_PATH = "/api/v3/jobs"
TIMEOUT_S = 30.0


def job_for_plan(plan: dict, plan_dir: str, *, python: str | None = None, blender: str | None = None,
                 priority: int = 50, name: str | None = None, submitter_platform: str | None = None,
                 da3_root: str | None = None) -> dict:
    """The ``SubmittedJob`` of a planned shot (``da3_blender.farm.tasks.read_plan``) in ``plan_dir``.

    ``da3_root``: the DA3 for Blender folder on the workers (a checkout: its ``scripts/da3_farm.py``
    runs the steps); default this one, refused when it has no ``scripts/`` (an installed extension).
    """
    from .tasks import openjd_params

    root = workers_root(da3_root)

    params = openjd_params(plan, plan_dir)
    job = plan["job"]
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
        raise BadInputError(f"Flamenco priority must be a whole number 0-100, got {priority!r}")
    return {
        "name": name or f"DA3 {plan['shot']}",
        "type": JOB_TYPE,
        "priority": priority,
        "submitter_platform": submitter_platform or platform.system().lower(),
        "settings": {
            "input": job["inputs"][0] if len(job["inputs"]) == 1 else ", ".join(job["inputs"]),
            "output": params["BlendFile"],
            "model": job["model"],
            "chunks": len(plan["chunks"]),
            "device": job["device"],
            "python": python or PYTHON_VARIABLE,
            "blender": blender or BLENDER_VARIABLE,
            "plan_dir": plan_dir,
            "da3_root": root,
        },
        "metadata": {"da3.plan_id": plan["plan_id"], "da3.views": str(plan["views"]["count"]),
                     "da3.shot": plan["shot"]},
    }


def workers_root(da3_root: str | None = None) -> str:
    """The DA3 folder the workers run the steps from: ``da3_root``, else this one if it has ``scripts/``."""
    from .tasks import REPO_ROOT

    if da3_root:
        return da3_root
    if not (REPO_ROOT / "scripts" / "da3_farm.py").is_file():
        raise BadInputError("the workers need a DA3 for Blender folder with scripts/ (a checkout or the source zip), "
                            "not the installed extension: set it in the DA3 preferences (Render farm)")
    return str(REPO_ROOT)


def jobs_url(manager_url: str) -> str:
    """``http(s)://host[:port][/prefix]`` -> its ``/api/v3/jobs``; one line for anything else."""
    text = (manager_url or "").strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInputError(f"Flamenco manager URL {manager_url!r} is not an http(s) address: give e.g. "
                            "http://flamenco-manager:8080")
    return text.rstrip("/") + JOBS_PATH


def submit(manager_url: str, job: dict, timeout: float = TIMEOUT_S) -> dict:
    """POST ``job`` to the manager; returns its answer (the compiled job, with ``id``)."""
    url = jobs_url(manager_url)
    body = json.dumps(job).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (http(s) checked above)
            text = answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        detail = _message(exc.read().decode("utf-8", "replace")) or exc.reason
        hint = (" (is farm/flamenco/da3_reconstruct.js in the manager's scripts folder? restart the manager "
                "after adding it)" if exc.code in (400, 404, 412, 422) else "")
        raise BadInputError(f"the Flamenco manager at {manager_url} refused the job (HTTP {exc.code}: {detail}){hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DA3Error(f"cannot reach the Flamenco manager at {manager_url} ({reason}): check the URL and that "
                       "the manager runs", kind="connection") from None
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {}


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    return str(data.get("message") or data) if isinstance(data, dict) else str(data)


def plan_and_submit(job: dict, manager_url: str, plan_dir: str, python: str, *, env: dict | None = None,
                    blend: str | None = None, priority: int = 50, name: str | None = None,
                    da3_root: str | None = None, timeout: float = 3600.0) -> tuple[dict, dict]:
    """Plan ``job`` (a :mod:`da3_blender.job` dict) into ``plan_dir`` with ``python`` (a Python with the DA3
    requirements: ``python -m da3_blender farm plan``, this package on its path) and submit it; returns
    ``(manager's answer, plan)``. ``da3_root``: see :func:`job_for_plan`.

    What the panel's *Submit to Flamenco* and ``reconstruct.py --submit-flamenco`` run; Blender's own
    Python needs neither torch nor numpy for it. ``plan_dir`` must be on storage the workers see.
    """
    import os
    import subprocess

    from .tasks import REPO_ROOT, read_plan
    from ..files import make_folder, open_atomic

    jobs_url(manager_url)  # a bad URL or no DA3 folder for the workers fails before any work
    workers_root(da3_root)
    make_folder(plan_dir)
    job_file = os.path.join(plan_dir, "job.json")
    with open_atomic(job_file, "w") as fh:
        json.dump(job, fh, indent=1)
    command = [python, "-m", "da3_blender", "farm", "plan", "--job", job_file, "--out", plan_dir, "-q"]
    if blend:
        command += ["--blend", os.path.abspath(blend)]
    try:
        run_env = {**os.environ, **(env or {})}
        run_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), run_env.get("PYTHONPATH")) if p)
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=run_env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DA3Error(f"planning the shot with {python} failed ({exc}): check the worker Python") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise BadInputError((lines[-1].removeprefix("da3: error: ") if lines else f"planning failed (exit {proc.returncode})"))
    plan = read_plan(plan_dir)
    answer = submit(manager_url, job_for_plan(plan, os.path.abspath(plan_dir), priority=priority, name=name,
                                              da3_root=da3_root))
    return answer, plan
