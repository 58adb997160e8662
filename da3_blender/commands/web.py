"""The argparse side of ``da3 backend``, ``da3 gallery`` and ``da3 gradio`` (:mod:`da3_blender.web`).

    da3 backend [--model-dir M] [--device D] [--host 127.0.0.1] [--port 8008] [--gallery-dir DIR]
                [--allow-root DIR]... [--allow-remote] [--max-body BYTES] [--max-images N]
    da3 gallery [--gallery-dir DIR] [--host 127.0.0.1] [--port 8007]
    da3 gradio  [--model-dir M] [--host 127.0.0.1] [--port 7860] [--workspace-dir DIR] [--gallery-dir DIR]
"""

from __future__ import annotations

import os

from .. import options as opt

COMMANDS = ("backend", "gallery", "gradio")
DEFAULT_GALLERY_DIR = opt.DEFAULT_GALLERY_DIR
DEFAULT_WORKSPACE_DIR = os.path.join("workspace", "gradio")
GALLERY_PORT = 8007
GRADIO_PORT = 7860


def _serving(p, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this computer only)")
    p.add_argument("--port", type=int, default=port, help=f"port (default: {port})")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback; every request then needs the printed token")


def add_commands(sub, common) -> None:
    from ..web.backend import DEFAULT_PORT
    from ..web.http import DEFAULT_MAX_BODY
    from ..web.payload import DEFAULT_MAX_IMAGES

    model = opt.default_model()
    p = sub.add_parser("backend", help="serve the model over local HTTP (kept loaded; official routes)")
    p.add_argument("--model-dir", "--model", dest="model", default=model, help=f"repo id or model folder (default: {model})")
    p.add_argument("--device", default=opt.DEFAULT_DEVICE, help=f"{opt.DEVICE_HELP} (default: {opt.DEFAULT_DEVICE})")
    _serving(p, DEFAULT_PORT)
    p.add_argument("--gallery-dir", default=DEFAULT_GALLERY_DIR,
                   help=f"results folder served at /gallery, and where tasks without export_dir write (default: {DEFAULT_GALLERY_DIR})")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="requests may read and write only under these folders and the gallery (repeat; default: the current folder)")
    p.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help=f"largest request body in bytes (default: {DEFAULT_MAX_BODY})")
    p.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES,
                   help=f"most images (or video frames) per request (default: {DEFAULT_MAX_IMAGES})")
    p.add_argument("--python", default=None, help="the worker's Python (default: this one)")

    p = sub.add_parser("gallery", help="serve a page of result folders with a 3D viewer")
    p.add_argument("--gallery-dir", default=DEFAULT_GALLERY_DIR, help=f"folder of results (default: {DEFAULT_GALLERY_DIR})")
    _serving(p, GALLERY_PORT)

    p = sub.add_parser("gradio", help="the web app (needs the app extra: pip install 'da3-blender[app]')")
    p.add_argument("--model-dir", "--model", dest="model", default=model, help=f"default model (default: {model})")
    p.add_argument("--device", default=opt.DEFAULT_DEVICE, help=f"{opt.DEVICE_HELP} (default: {opt.DEFAULT_DEVICE})")
    p.add_argument("--process-res", type=int, default=opt.DEFAULT_PROCESS_RES,
                   help=f"the page's default processing resolution (default: {opt.DEFAULT_PROCESS_RES})")
    _serving(p, GRADIO_PORT)
    p.add_argument("--workspace-dir", default=DEFAULT_WORKSPACE_DIR, help=f"uploads and runs (default: {DEFAULT_WORKSPACE_DIR})")
    p.add_argument("--gallery-dir", default=DEFAULT_GALLERY_DIR, help=f"each run's results are also listed here (default: {DEFAULT_GALLERY_DIR})")


def run_command(args) -> int:
    if args.command == "backend":
        from ..web.backend import serve_backend

        return serve_backend(model=args.model, device=args.device, host=args.host, port=args.port,
                             gallery_dir=args.gallery_dir, allow_roots=args.allow_root, allow_remote=args.allow_remote,
                             max_body=args.max_body, max_images=args.max_images, python=args.python)
    if args.command == "gallery":
        from ..web.gallery import serve_gallery

        return serve_gallery(args.gallery_dir, args.host, args.port, args.allow_remote)
    if args.command == "gradio":
        from ..web.gradio_app import launch

        return launch(model=args.model, device=args.device, host=args.host, port=args.port,
                      workspace_dir=args.workspace_dir, gallery_dir=args.gallery_dir, process_res=args.process_res,
                      allow_remote=args.allow_remote)
    raise ValueError(f"not a web command: {args.command}")
