"""One reconstruction: settings -> worker job -> events -> scene import.

:class:`Run` holds no Blender UI: the ``da3.reconstruct`` operator drives it from a modal timer
(or a blocking loop in background mode), calling :meth:`Run.step` until it returns an outcome.
The scene is touched only by :meth:`Run.finish` after a ``result`` event, so a cancelled or
failed run leaves it exactly as it was.
"""

from __future__ import annotations

import os
import re
import time

import bpy

from ..da3_blender.errors import BadInputError
from ..preferences import get_preferences, results_dir, worker_env, worker_remote
from ..properties import model_info
from . import session, validate

# share of the progress bar per worker stage (in order)
STAGES = (("upload", 0.05), ("load", 0.15), ("preprocess", 0.05), ("forward", 0.55), ("postprocess", 0.1),
          ("export", 0.05), ("save", 0.03), ("download", 0.02))  # upload/download: remote workers only


EVERY_FRAME = 1000.0  # an fps above any video's: the worker then takes every frame


def overall_fraction(stage: str, fraction: float) -> float:
    done = 0.0
    for name, share in STAGES:
        if name == stage:
            return min(1.0, done + share * max(0.0, min(1.0, fraction)))
        done += share
    return done if stage else 0.0


def _job_name(settings, inputs: list[str]) -> str:
    path = inputs[0].rstrip("/\\")
    base = os.path.basename(path) if settings.input_mode == "FOLDER" else os.path.splitext(os.path.basename(path))[0]
    return base or "DA3"


def import_options(settings):
    """The Build settings as scene.importer.ImportOptions."""
    from ..scene.importer import ImportOptions

    return ImportOptions(
        points=settings.build_points,
        planes=settings.build_planes,
        cameras=settings.build_cameras,
        fuse_points=settings.fuse_points,
        conf_percentile=settings.conf_percentile,
        max_points=settings.max_points,
        point_stride=settings.point_stride,
        plane_stride=settings.plane_stride,
        plane_texture=settings.plane_texture,
        pack_images=settings.pack_images,
        plane_edge_threshold=settings.plane_edge_threshold,
        up_axis=settings.up_axis,
        scale={"PREDICTED": "predicted", "METRIC": "metric"}.get(settings.scale_mode, float(settings.scale_factor)),
        fixed_intrinsics=settings.fixed_intrinsics,
        interpolation=settings.interpolation,
    )


class Run:
    """A job from the panel's settings. ``Run(context)`` validates and raises on bad input."""

    def __init__(self, context, settings=None):
        settings = settings or context.scene.da3_settings  # not kept: undo may reallocate it
        prefs = get_preferences(context)
        inputs, images = validate.check_inputs(settings)
        self.remote = worker_remote(prefs)  # None: a local worker
        self.python = validate.check_worker(prefs) if self.remote is None else self.remote.python
        self.env = worker_env(prefs)
        model = settings.model_id
        if not model:
            raise BadInputError("no custom model given: enter a Hugging Face repo id or a local folder in DA3 > Model")
        self.options = import_options(settings)
        info = model_info(model)
        if info is not None and not info["pose"] and settings.build_cameras and len(images) > 1:
            raise BadInputError(f"{info['label']} predicts depth only, no camera poses, so {len(images)} images "
                                "cannot be placed together: use a multi-view model (DA3 Small/Base/Large/Giant/"
                                "Nested), one image, or turn off Cameras in DA3 > Build")
        if info is not None and settings.scale_mode == "METRIC" and info["depth"] != "metric":
            raise BadInputError(f"{info['label']} predicts relative depth, so Scale 'Metric' cannot apply: choose "
                                "DA3 Metric Large or Nested, or set DA3 > Build > Scale to 'As predicted' or 'Factor'")
        job_options = {
            "process_res": int(settings.process_res),
            "process_res_method": settings.process_res_method,
            "use_ray_pose": bool(settings.use_ray_pose),
            "ref_view_strategy": settings.ref_view_strategy,
            "conf_thresh_percentile": float(settings.conf_percentile),
            "num_max_points": int(settings.max_points),
        }
        if settings.use_selected_cameras:
            scale = self.options.scale if isinstance(self.options.scale, (int, float)) else 1.0
            job_options["extrinsics"], job_options["intrinsics"] = validate.known_poses(context, images, self.options.up_axis, scale)
        self.name = _job_name(settings, inputs)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)[:60]
        self.output = os.path.join(results_dir(prefs), f"{safe}-{stamp}-{os.getpid()}.npz")
        device = prefs.default_device if settings.device == "DEFAULT" else settings.device
        self.job = {
            "inputs": inputs,
            "output": self.output,
            "model": model,
            "device": device,
            "options": job_options,
        }
        if settings.input_mode == "VIDEO":
            self.job["video"] = {
                "fps": settings.video_fps or EVERY_FRAME,
                "start": settings.video_start or None,
                "end": settings.video_end or None,
                "max_frames": settings.max_frames or None,
            }
        if settings.export_format:
            export_dir = bpy.path.abspath(settings.export_dir) if settings.export_dir.strip() else ""
            if not export_dir:
                raise BadInputError("export formats chosen but no export folder: set it in DA3 > Build")
            self.job["export_dir"] = export_dir
            self.job["export_format"] = "-".join(sorted(settings.export_format))
        self.keep_results = settings.keep_results
        self.client = None
        self.job_id = None
        self.stage, self.fraction, self.message = "", 0.0, ""
        self.outcome = None  # "result" | "error" once the job ended
        self.event = None  # the terminal event
        self.cancel_requested = False
        self.started = None

    # -- worker --------------------------------------------------------------------------------
    def start(self) -> None:
        self.client = session.client(self.python, self.env, self.remote)
        self.job_id = self.client.submit(self.job)
        self.started = time.monotonic()
        session.active_run = self

    def step(self) -> str | None:
        """Handle what the worker sent since the last call; the outcome once the job has ended."""
        for ev in self.client.poll():
            if ev.get("job") not in (self.job_id, None):
                continue
            kind = ev.get("event")
            if kind == "progress":
                self.stage = ev.get("stage", "")
                self.fraction = overall_fraction(self.stage, float(ev.get("fraction") or 0.0))
                self.message = ev.get("message", "")
            elif kind == "loaded":
                self.message = f"loaded {ev.get('model')} on {ev.get('device')}"
            elif kind in ("result", "error") and ev.get("job") == self.job_id:
                self.outcome, self.event = kind, ev
            session.notify(self, ev)
            if self.outcome:
                break
        return self.outcome

    def cancel(self) -> None:
        """Ask the worker to stop (it is killed if it does not answer within a few seconds)."""
        if self.client is not None and self.job_id and not self.outcome:
            self.cancel_requested = True
            self.client.cancel(self.job_id)

    def abandon(self) -> None:
        """Stop caring about the job (extension unregistered): cancel and drop the result file."""
        self.cancel()
        self._remove_output()
        if session.active_run is self:
            session.active_run = None

    def wait(self, poll_interval: float = 0.05) -> str:
        """Block until the job ends (background mode)."""
        while self.step() is None:
            time.sleep(poll_interval)
        return self.outcome

    # -- outcome -------------------------------------------------------------------------------
    def finish(self, context) -> tuple[bool, str]:
        """Import a result (one undo step) or explain the error. Returns (success, one-line message)."""
        if session.active_run is self:
            session.active_run = None
        ev = self.event or {}
        if self.outcome != "result":
            self._remove_output()
            if ev.get("kind") == "cancelled" or self.cancel_requested:
                return False, "Cancelled: the scene was not changed"
            return False, f"DA3 failed: {ev.get('message') or 'no answer from the worker'}"
        path = ev.get("path") or self.output
        from ..scene import importer

        try:
            collection = importer.import_result_file(path, self.options)
        except Exception as ex:  # the importer removes what it created; keep the file for a retry
            return False, (f"DA3 import failed ({ex}); the result is kept at {path}: "
                           "import it again with DA3 > Import Result")
        try:
            bpy.ops.ed.undo_push(message="DA3 Reconstruct")
        except RuntimeError:
            pass
        if not self.keep_results:
            self._remove_output(path)
        s = ev.get("summary") or {}
        size = s.get("size") or ["?", "?"]
        where = getattr(collection, "name", self.name)
        return True, (f"{s.get('views', '?')} view(s) at {size[1]}x{size[0]} with {os.path.basename(str(s.get('model')))} "
                      f"on {s.get('device', '?')} in {float(s.get('seconds') or 0):.1f} s -> '{where}'")

    def _remove_output(self, path: str | None = None) -> None:
        for p in {path or self.output, self.output}:
            try:
                os.remove(p)
            except OSError:
                pass
