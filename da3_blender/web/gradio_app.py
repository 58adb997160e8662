"""``da3 gradio``: the web app (the ``app`` extra: ``pip install 'da3-blender[app]'``).

Upload images or a video, pick a model and a processing resolution, run with a progress bar, turn
the 3D result (``gr.Model3D`` on the glb) and look at the depth pictures, download the exports. The
model runs in our worker (:class:`~da3_blender.runtime.client.WorkerClient`), kept loaded between
runs, one run at a time. Each run's exports go to ``GALLERY_DIR/gradio/<run>`` (so ``da3 gallery``
lists them); its result file and logs to ``WORKSPACE_DIR/<run>``. Binds 127.0.0.1 by default (another
host needs ``--allow-remote`` and then a login: user ``da3``, the printed token); there is no
``--share`` tunnel. Nothing else in the package imports this module.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from .. import options as opt
from ..errors import DA3Error, MissingDependencyError
from ..runtime.client import WorkerClient

EXPORTS = "glb-depth_vis-ply-colmap-mini_npz"
API_NAME = "reconstruct"  # gradio_client: Client(url).predict(..., api_name="/reconstruct")


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio as gr
    except ImportError:
        raise MissingDependencyError("da3 gradio needs the app extra: pip install 'da3-blender[app]' (gradio)") from None
    return gr


class Reconstructor:
    """The app's one action, on a warm worker."""

    def __init__(self, device: str, workspace_dir: str, gallery_dir: str, client: WorkerClient | None = None):
        self.device = device
        self.workspace_dir = os.path.abspath(workspace_dir)
        self.gallery_dir = os.path.abspath(gallery_dir)
        self.client = client or WorkerClient(log_dir=self.workspace_dir)

    def __call__(self, images, video, fps, model, process_res, method, conf, progress=None):
        from ..job import build_job

        files = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (images or [])]
        if video:
            files = [video if isinstance(video, str) else getattr(video, "name", str(video))]
        if not files:
            raise DA3Error("upload some images or a video first", kind="bad_input")
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        export_dir = os.path.join(self.gallery_dir, "gradio", run_id)
        os.makedirs(os.path.join(self.workspace_dir, run_id), exist_ok=True)
        job = build_job(files, os.path.join(self.workspace_dir, run_id, "result.npz"), model=model or None,
                        device=self.device, video={"fps": float(fps)} if video else None,
                        options={"process_res": int(process_res), "process_res_method": method,
                                 "conf_thresh_percentile": float(conf)},
                        export_dir=export_dir, export_format=EXPORTS)
        job_id = self.client.submit(job)

        def on_event(event):
            if progress is not None and event.get("event") == "progress":
                progress(float(event.get("fraction") or 0.0), desc=f"{event.get('stage')}: {event.get('message', '')}")

        final = self.client.wait_job(job_id, 24 * 3600.0, on_event=on_event)
        if final is None or final.get("event") != "result":
            raise DA3Error((final or {}).get("message") or "the worker gave no answer", kind="internal")
        return self._outputs(export_dir, final.get("summary") or {})

    def _outputs(self, export_dir: str, summary: dict):
        vis = os.path.join(export_dir, "depth_vis")
        depth = [os.path.join(vis, n) for n in sorted(os.listdir(vis))] if os.path.isdir(vis) else []
        downloads = [os.path.join(folder, n) for folder, _, names in os.walk(export_dir) for n in sorted(names)
                     if not n.endswith(".png")]
        h, w = summary.get("size") or (0, 0)
        text = (f"**{summary.get('views', 0)} views** at {w}x{h} with `{summary.get('model')}` on {summary.get('device')} "
                f"in {summary.get('seconds', 0):.1f} s (model loads so far: {summary.get('model_loads')}); "
                f"files in `{export_dir}`")
        return os.path.join(export_dir, "scene.glb"), depth, downloads, text


def build_app(model: str, device: str, workspace_dir: str, gallery_dir: str, client: WorkerClient | None = None,
              process_res: int = opt.DEFAULT_PROCESS_RES):
    """The gradio Blocks of the app."""
    gr = _gradio()
    run = Reconstructor(device, workspace_dir, gallery_dir, client)
    models = list(dict.fromkeys([model, *(m[0] for m in opt.MODEL_ZOO)]))

    def reconstruct(images, video, fps, model_name, process_res, method, conf, progress=gr.Progress()):
        try:
            return run(images, video, fps, model_name, process_res, method, conf, progress)
        except DA3Error as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title="Depth Anything 3") as demo:
        gr.Markdown("# Depth Anything 3\nPhotos or a video in: depth, cameras and a 3D point cloud out.")
        with gr.Row():
            with gr.Column(scale=1):
                images = gr.File(label="Images", file_count="multiple", file_types=["image"])
                video = gr.File(label="…or a video", file_count="single", file_types=["video"])
                fps = gr.Number(label="Video: frames per second to sample (0 = every frame)", value=opt.DEFAULT_VIDEO_FPS)
                model_dd = gr.Dropdown(models, value=model, label="Model", allow_custom_value=True)
                res = gr.Slider(opt.MIN_PROCESS_RES * 10, 1008, step=14, value=process_res,
                                label="Processing resolution (pixels)")
                method = gr.Dropdown(list(opt.choice_ids(opt.PROCESS_RES_METHODS)), value=opt.DEFAULT_PROCESS_RES_METHOD,
                                     label="Fit")
                conf = gr.Slider(0, 100, value=opt.DEFAULT_CONF_THRESH_PERCENTILE, label="Confidence cut (percentile)")
                button = gr.Button("Reconstruct", variant="primary")
            with gr.Column(scale=2):
                status = gr.Markdown()
                model3d = gr.Model3D(label="3D result", clear_color=(0.12, 0.12, 0.14, 1.0), height=480)
                depth = gr.Gallery(label="Depth", columns=4, height=220)
                downloads = gr.File(label="Exports", file_count="multiple")
        button.click(reconstruct, inputs=[images, video, fps, model_dd, res, method, conf],
                     outputs=[model3d, depth, downloads, status], api_name=API_NAME, concurrency_limit=1)
    demo.da3_client = run.client
    return demo


def launch(model: str, device: str, host: str, port: int, workspace_dir: str, gallery_dir: str,
           process_res: int = opt.DEFAULT_PROCESS_RES, allow_remote: bool = False) -> int:
    """``da3 gradio``: serve the app until interrupted. Another host than loopback needs
    ``allow_remote``, and then a login (user ``da3``, the printed token as password)."""
    from ..job import check_device
    from .http import check_port_free
    from .security import check_bind, make_token

    check_device(device)
    check_bind(host, allow_remote)
    check_port_free(host, port)  # a port in use: one line naming --port, before anything is made
    token = make_token(allow_remote)
    for folder in (workspace_dir, gallery_dir):
        os.makedirs(folder, exist_ok=True)
    demo = build_app(model, device, workspace_dir, gallery_dir, process_res=process_res)
    print(f"da3 gradio: {model} on {device}; workspace {os.path.abspath(workspace_dir)}, "
          f"gallery {os.path.abspath(gallery_dir)}", file=sys.stdout, flush=True)
    if token:
        print(f"da3 gradio: log in as user da3 with password {token}", file=sys.stdout, flush=True)
    try:
        demo.queue(default_concurrency_limit=1).launch(
            server_name=host, server_port=port, share=False, show_error=True, auth=("da3", token) if token else None,
            allowed_paths=[os.path.abspath(workspace_dir), os.path.abspath(gallery_dir)])
    except KeyboardInterrupt:
        pass
    finally:
        demo.da3_client.shutdown()
    return 0
