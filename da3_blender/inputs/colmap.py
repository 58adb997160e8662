"""A COLMAP model's cameras as known poses for DA3 (``da3 colmap MODEL_DIR --image-dir DIR``).

Reads a sparse model folder (``cameras``/``images`` as ``.txt`` or ``.bin``; ``points3D`` is not
needed) without pycolmap. Each registered image whose file is in the image folder becomes a view
with its world-to-camera pose (COLMAP's qvec/tvec, OpenCV axes) and its pinhole intrinsics in image
pixels (COLMAP and DA3 both put the top-left pixel's centre at (0.5, 0.5)), scaled when the image
file is a resized copy of the one COLMAP saw. Camera models: SIMPLE_PINHOLE, PINHOLE, and
SIMPLE_RADIAL / RADIAL / OPENCV when their distortion is zero; non-zero distortion is refused in one
line unless the images were undistorted (``--undistorted``, e.g. by ``colmap image_undistorter``).
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import numpy as np

from ..errors import BadInputError
from ..exports.colmap import Camera, Image, qvec_to_rotmat, read_colmap_text

# COLMAP's camera model ids: (name, number of parameters)
CAMERA_MODELS = {0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
                 4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
                 8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
                 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16)}
# models we take: name -> (fx, fy, cx, cy indices; indices of distortion parameters)
PINHOLE_PARTS = {"SIMPLE_PINHOLE": ((0, 0, 1, 2), ()), "PINHOLE": ((0, 1, 2, 3), ()),
                 "SIMPLE_RADIAL": ((0, 0, 1, 2), (3,)), "RADIAL": ((0, 0, 1, 2), (3, 4)),
                 "OPENCV": ((0, 1, 2, 3), (4, 5, 6, 7))}


class ColmapViews(NamedTuple):
    paths: list[str]  # image files, in the model's image-name order
    extrinsics: np.ndarray  # (N,4,4) world-to-camera, OpenCV
    intrinsics: np.ndarray  # (N,3,3) in pixels of the image files
    skipped: list[str]  # registered images whose file is not in the image folder


def model_folder(path: str) -> str:
    """The folder holding ``cameras.{txt,bin}``: ``path`` itself, or its ``sparse/0`` / ``sparse`` / ``0``."""
    for sub in ("", os.path.join("sparse", "0"), "sparse", "0"):
        folder = os.path.join(path, sub)
        if any(os.path.isfile(os.path.join(folder, f"cameras.{e}")) for e in ("txt", "bin")):
            return folder
    raise BadInputError(f"{path} is not a COLMAP model folder (no cameras.txt or cameras.bin in it or in "
                        "sparse/0): give the folder of the sparse model")


def read_model(folder: str) -> tuple[dict[int, Camera], dict[int, Image]]:
    """Cameras and images of a text or binary model (text wins when both are there)."""
    folder = model_folder(folder)
    if os.path.isfile(os.path.join(folder, "cameras.txt")):
        cams, imgs, _ = read_colmap_text(folder) if os.path.isfile(os.path.join(folder, "points3D.txt")) \
            else _read_text_without_points(folder)
        return cams, imgs
    try:
        return read_cameras_bin(os.path.join(folder, "cameras.bin")), read_images_bin(os.path.join(folder, "images.bin"))
    except (struct.error, UnicodeDecodeError, KeyError) as exc:
        raise BadInputError(f"{folder} is not a readable COLMAP binary model ({type(exc).__name__}: {exc})") from None


def _read_text_without_points(folder: str):
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the text reader wants points3D.txt: give it an empty one
        for name in ("cameras.txt", "images.txt"):
            shutil.copyfile(os.path.join(folder, name), os.path.join(tmp, name))
        open(os.path.join(tmp, "points3D.txt"), "w").close()
        return read_colmap_text(tmp)


def _unpack(fh, fmt: str):
    size = struct.calcsize("<" + fmt)
    data = fh.read(size)
    if len(data) != size:
        raise struct.error("file ends early")
    return struct.unpack("<" + fmt, data)


def read_cameras_bin(path: str) -> dict[int, Camera]:
    cameras = {}
    with open(path, "rb") as fh:
        (count,) = _unpack(fh, "Q")
        for _ in range(count):
            cam_id, model_id, width, height = _unpack(fh, "iiQQ")
            if model_id not in CAMERA_MODELS:
                raise BadInputError(f"{path}: unknown COLMAP camera model id {model_id}")
            name, n = CAMERA_MODELS[model_id]
            cameras[cam_id] = Camera(cam_id, name, int(width), int(height), np.array(_unpack(fh, "d" * n)))
    return cameras


def read_images_bin(path: str) -> dict[int, Image]:
    images = {}
    with open(path, "rb") as fh:
        (count,) = _unpack(fh, "Q")
        for _ in range(count):
            image_id, qw, qx, qy, qz, tx, ty, tz, cam_id = _unpack(fh, "idddddddi")
            name = bytearray()
            while (ch := fh.read(1)) not in (b"\x00", b""):
                name += ch
            (n_points,) = _unpack(fh, "Q")
            fh.seek(24 * n_points, os.SEEK_CUR)  # (x, y, point3D_id) per observation: not needed
            images[image_id] = Image(image_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), cam_id,
                                     name.decode("utf-8"), np.zeros((0, 2)), np.zeros(0, np.int64))
    return images


def pinhole_matrix(camera: Camera, undistorted: bool = False) -> np.ndarray:
    """The 3x3 K of a COLMAP camera in its own pixels; one-line refusal for distortion or other models."""
    if camera.model not in PINHOLE_PARTS:
        raise BadInputError(f"camera {camera.id} is a {camera.model} camera: DA3 takes pinhole cameras "
                            f"({', '.join(PINHOLE_PARTS)}); undistort the images first (colmap image_undistorter)")
    (fx, fy, cx, cy), dist = PINHOLE_PARTS[camera.model]
    p = camera.params
    if not undistorted and any(abs(p[i]) > 1e-12 for i in dist):
        raise BadInputError(f"camera {camera.id} ({camera.model}) has lens distortion: undistort the images "
                            "(colmap image_undistorter) and use that model, or pass --undistorted if the "
                            "images in --image-dir are already undistorted")
    return np.array([[p[fx], 0.0, p[cx]], [0.0, p[fy], p[cy]], [0.0, 0.0, 1.0]])


def colmap_views(model_dir: str, image_dir: str, undistorted: bool = False) -> ColmapViews:
    """The views of ``model_dir`` whose image files are in ``image_dir``, checked before any work."""
    from PIL import Image as PILImage

    from .paths import natural_key

    if not os.path.isdir(image_dir):
        raise BadInputError(f"--image-dir {image_dir} is not a folder")
    cameras, images = read_model(model_dir)
    if not images:
        raise BadInputError(f"the COLMAP model in {model_dir} has no registered images")
    paths, extr, intr, skipped = [], [], [], []
    for image in sorted(images.values(), key=lambda im: natural_key(im.name)):
        path = os.path.join(image_dir, *image.name.split("/"))
        if not os.path.isfile(path):
            skipped.append(image.name)
            continue
        if image.camera_id not in cameras:
            raise BadInputError(f"image {image.name} names camera {image.camera_id}, which is not in the model")
        camera = cameras[image.camera_id]
        k = pinhole_matrix(camera, undistorted)
        with PILImage.open(path) as im:
            width, height = im.size
        sx, sy = width / camera.width, height / camera.height
        if abs(sx - sy) > 0.01 * max(sx, sy):
            raise BadInputError(f"{image.name} is {width}x{height} but its COLMAP camera is {camera.width}x"
                                f"{camera.height} (another aspect ratio): use the images the model was made from")
        k[0] *= sx
        k[1] *= sy
        pose = np.eye(4)
        pose[:3, :3] = qvec_to_rotmat(np.asarray(image.qvec, dtype=np.float64))
        pose[:3, 3] = image.tvec
        paths.append(path)
        extr.append(pose)
        intr.append(k)
    if not paths:
        raise BadInputError(f"none of the {len(images)} images of the COLMAP model is in {image_dir} "
                            f"(e.g. {sorted(images.values(), key=lambda im: im.id)[0].name}): check --image-dir")
    return ColmapViews(paths, np.stack(extr), np.stack(intr), skipped)
