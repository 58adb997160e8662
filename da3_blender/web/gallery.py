"""``da3 gallery`` and the backend's ``/gallery``: a page listing result folders, each with its glb in
a 3D viewer (three.js, vendored at build time by ``scripts/vendor_three.py``; no CDN) and its depth
pictures.

A result folder is any folder (up to :data:`MAX_DEPTH` levels below the gallery folder) holding a
``scene.glb`` (the ``glb`` export) or a ``depth_vis/`` folder (the ``depth_vis`` export) -- an
``--export-dir`` of the ``da3`` command, a backend task's folder or an official gallery's
``group/scene`` folder. Routes (read-only, files only from inside the gallery folder, no hidden
names)::

    GET /gallery/             the page
    GET /gallery/index.json   {"items": [{id, title, model, thumbnail, depth_images, files}]}
    GET /gallery/files/PATH   a file of a result folder
    GET /gallery/static/NAME  the page's script; /gallery/vendor/PATH three.js
    GET /gallery/manifest.json, /gallery/manifest/GROUP.json, /gallery/GROUP/SCENE/FILE   as the official gallery
"""

from __future__ import annotations

import os
import sys
from urllib.parse import quote

from ..files import confined as confined_path
from ..errors import BadInputError
from .http import Handler, HttpError, Server, route, serve

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
VENDOR_DIR = os.path.join(STATIC_DIR, "vendor")
MAX_DEPTH = 3
MAX_ITEMS = 500
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
DOWNLOAD_EXTS = (".glb", ".ply", ".npz", ".txt", ".exr")


def _url(*parts: str) -> str:
    return "files/" + "/".join(quote(p) for p in "/".join(parts).replace(os.sep, "/").split("/") if p)


def _visible(name: str) -> bool:
    return not name.startswith(".")


def find_results(root: str) -> list[dict]:
    """The result folders under ``root`` (sorted by path) as manifest items."""
    root = os.path.realpath(root)
    items = []
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = sorted(d for d in dirs if _visible(d) and depth < MAX_DEPTH)
        has_vis = os.path.isdir(os.path.join(folder, "depth_vis"))
        if "scene.glb" not in files and not has_vis:
            continue
        rel = "" if rel == "." else rel
        depth_images = []
        if has_vis:
            names = sorted(n for n in os.listdir(os.path.join(folder, "depth_vis"))
                           if _visible(n) and n.lower().endswith(IMAGE_EXTS))
            depth_images = [_url(rel, "depth_vis", n) for n in names]
        thumb = next((_url(rel, n) for n in ("scene.jpg", "scene.png") if n in files), None)
        items.append({
            "id": rel or ".",
            "title": rel or os.path.basename(root),
            "model": _url(rel, "scene.glb") if "scene.glb" in files else None,
            "thumbnail": thumb or (depth_images[0] if depth_images else None),
            "depth_images": depth_images,
            "files": [_url(rel, n) for n in sorted(files) if _visible(n) and n.lower().endswith(DOWNLOAD_EXTS)],
        })
        if len(items) >= MAX_ITEMS:
            break
    return sorted(items, key=lambda item: item["id"])


def official_groups(root: str) -> dict:
    """The official ``/gallery/manifest.json``: the top folders holding ``GROUP/SCENE`` results."""
    groups = sorted({item["id"].split("/")[0] for item in find_results(root) if item["id"].count("/") == 1})
    return {"groups": [{"id": g, "title": g} for g in groups]}


def official_group(root: str, group: str) -> dict:
    """The official ``/gallery/manifest/GROUP.json``: that group's scenes, with absolute URLs."""
    def absolute(url):
        return "/gallery/" + url[len("files/"):] if url else url

    items = [{"id": item["id"].split("/")[1], "title": item["id"].split("/")[1], "model": absolute(item["model"]),
              "thumbnail": absolute(item["thumbnail"]), "depth_images": [absolute(u) for u in item["depth_images"]]}
             for item in find_results(root) if item["id"].count("/") == 1 and item["id"].split("/")[0] == group]
    return {"group": group, "items": items}


def confined(base: str, rel: str) -> str:
    """``base/rel`` when it stays inside ``base`` (no ``..``, no hidden names, no link out), else 404."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        raise HttpError(404, "no such file")
    base = os.path.realpath(base)
    path = confined_path(os.path.join(base, *parts), [base], allow_root=False)
    if path is None:
        raise HttpError(404, "no such file")
    return path


def vendor_ready() -> bool:
    """True when three.js is vendored (``python scripts/vendor_three.py``)."""
    return os.path.isfile(os.path.join(VENDOR_DIR, "three", "build", "three.module.js"))


class GalleryRoutes:
    """The gallery's routes for a handler with a ``gallery_dir`` (None: no gallery)."""

    gallery_dir: str | None = None

    def gallery_routes(self):
        return [
            route("GET", r"/gallery", lambda: self._redirect("/gallery/")),
            route("GET", r"/gallery/", lambda: self.send_file(os.path.join(STATIC_DIR, "gallery.html"))),
            route("GET", r"/gallery/index\.json", self._gallery_index),
            route("GET", r"/gallery/files/(.+)", lambda rel: self.send_file(confined(self._gallery(), _unquote(rel)))),
            route("GET", r"/gallery/static/([A-Za-z0-9_.-]+)", lambda n: self.send_file(confined(STATIC_DIR, n))),
            route("GET", r"/gallery/vendor/(.+)", lambda rel: self.send_file(confined(VENDOR_DIR, _unquote(rel)))),
            # the official gallery's manifests and file URLs (/gallery/GROUP/SCENE/scene.glb)
            route("GET", r"/gallery/manifest\.json", lambda: self.send_json(official_groups(self._gallery()))),
            route("GET", r"/gallery/manifest/([^/]+)\.json", lambda g: self.send_json(official_group(self._gallery(), _unquote(g)))),
            route("GET", r"/gallery/(.+)", lambda rel: self.send_file(confined(self._gallery(), _unquote(rel)))),
        ]

    def _gallery(self) -> str:
        if not self.gallery_dir:
            raise HttpError(404, "this server has no gallery folder (--gallery-dir)")
        return self.gallery_dir

    def _gallery_index(self) -> None:
        self.send_json({"items": find_results(self._gallery()), "viewer": vendor_ready()})

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


class GalleryHandler(GalleryRoutes, Handler):
    def routes(self):
        return [route("GET", r"/", lambda: self._redirect("/gallery/")), *self.gallery_routes()]


def serve_gallery(gallery_dir: str, host: str, port: int, allow_remote: bool = False, out=None) -> int:
    """``da3 gallery``: serve ``gallery_dir`` read-only until interrupted."""
    from .security import check_bind, make_token

    out = out or sys.stdout
    if not os.path.isdir(gallery_dir):
        raise BadInputError(f"gallery folder {gallery_dir} does not exist: give --gallery-dir FOLDER")
    check_bind(host, allow_remote)
    token = make_token(allow_remote)
    handler = type("Handler", (GalleryHandler,), {"gallery_dir": os.path.realpath(gallery_dir)})
    server = Server((host, port), handler, token=token)
    suffix = f"?token={token}" if token else ""
    print(f"da3 gallery: {os.path.realpath(gallery_dir)} at {server.url}/gallery/{suffix}", file=out, flush=True)
    if not vendor_ready():
        print("da3 gallery: warning: three.js is not vendored, the 3D viewer is off (python scripts/vendor_three.py)",
              file=out, flush=True)
    return serve(server)
