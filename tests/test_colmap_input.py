"""``da3 colmap MODEL_DIR --image-dir DIR``: COLMAP text and binary models read without pycolmap (pycolmap
only writes the binary copy here), pinhole intrinsics in image pixels, distortion refused in one line,
and our own COLMAP export read back as input giving the same cameras."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from da3_blender.commands.main import main
from da3_blender.inputs.colmap import colmap_views, pinhole_matrix, read_model
from da3_blender.exports import read_colmap_text
from da3_blender.exports.colmap import Camera, qvec_to_rotmat

FAST = ["--device", "cpu", "--process-res", "140", "--quiet"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fixture_dir, soh_images) -> Path:
    """A folder with imgs/ and the COLMAP export (colmap/sparse/0) of a da3 run on them."""
    root = tmp_path_factory.mktemp("colmap")
    (root / "imgs").mkdir()
    for path in soh_images:
        shutil.copy(path, root / "imgs" / path.name)
    assert main(["images", str(root / "imgs"), "--model", str(fixture_dir), *FAST, "--export-dir", str(root / "first"),
                 "--export-format", "colmap"]) == 0
    return root


def cameras_of(model: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image name -> (K in pixels, world-to-camera 3x4) of a COLMAP text model."""
    cams, imgs, _ = read_colmap_text(model)
    out = {}
    for im in imgs.values():
        k = pinhole_matrix(cams[im.camera_id])
        out[im.name] = (k, np.hstack([qvec_to_rotmat(im.qvec), im.tvec[:, None]]))
    return out


def test_our_colmap_export_round_trips_as_input(exported, fixture_dir, capsys):
    model = exported / "first" / "colmap" / "sparse" / "0"
    assert main(["colmap", str(model), "--image-dir", str(exported / "imgs"), "--model", str(fixture_dir), *FAST,
                 "--export-dir", str(exported / "second"), "--export-format", "colmap-mini_npz"]) == 0
    assert "2 views" in capsys.readouterr().out
    before, after = cameras_of(model), cameras_of(exported / "second" / "colmap" / "sparse" / "0")
    assert sorted(before) == sorted(after) == ["000.png", "010.png"]
    for name in before:
        np.testing.assert_allclose(after[name][0], before[name][0], rtol=1e-4)  # intrinsics in image pixels
        np.testing.assert_allclose(after[name][1], before[name][1], atol=1e-4)  # poses (scale kept)


def test_binary_model_reads_as_the_text_model(exported, tmp_path):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap (the solve/test extra) writes the binary model")
    text = exported / "first" / "colmap" / "sparse" / "0"
    pycolmap.Reconstruction(str(text)).write_binary(str(tmp_path))
    assert (tmp_path / "images.bin").is_file() and not (tmp_path / "images.txt").exists()
    cams_t, imgs_t = read_model(str(text))
    cams_b, imgs_b = read_model(str(tmp_path))
    assert sorted(cams_b) == sorted(cams_t) and sorted(imgs_b) == sorted(imgs_t)
    for key, cam in cams_t.items():
        assert (cams_b[key].model, cams_b[key].width, cams_b[key].height) == (cam.model, cam.width, cam.height)
        np.testing.assert_allclose(cams_b[key].params, cam.params)
    for key, im in imgs_t.items():
        assert imgs_b[key].name == im.name and imgs_b[key].camera_id == im.camera_id
        np.testing.assert_allclose(imgs_b[key].tvec, im.tvec)
        np.testing.assert_allclose(np.abs(imgs_b[key].qvec @ im.qvec), 1.0, atol=1e-9)  # same rotation
    a = colmap_views(str(text), str(exported / "imgs"))
    b = colmap_views(str(tmp_path), str(exported / "imgs"))
    np.testing.assert_allclose(b.extrinsics, a.extrinsics, atol=1e-9)
    np.testing.assert_allclose(b.intrinsics, a.intrinsics)


def write_model(folder: Path, camera_line: str, size=(64, 48), names=("a.png",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text(f"# cameras\n{camera_line}\n")
    lines = [f"{i + 1} 1 0 0 0 {i} 0 0 1 {name}\n\n" for i, name in enumerate(names)]
    (folder / "images.txt").write_text("".join(lines))
    (folder / "points3D.txt").write_text("")
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for name in names:
        Image.new("RGB", size, (120, 80, 40)).save(images / name)
    return images


@pytest.mark.parametrize("line, k", [
    ("1 SIMPLE_PINHOLE 64 48 50 32 24", [50, 50, 32, 24]),
    ("1 PINHOLE 64 48 50 55 31 23", [50, 55, 31, 23]),
    ("1 OPENCV 64 48 50 55 31 23 0 0 0 0", [50, 55, 31, 23]),
    ("1 SIMPLE_RADIAL 64 48 50 32 24 0", [50, 50, 32, 24]),
])
def test_pinhole_cameras_give_pixel_intrinsics(tmp_path, line, k):
    images = write_model(tmp_path, line)
    views = colmap_views(str(tmp_path), str(images))
    fx, fy, cx, cy = k
    np.testing.assert_allclose(views.intrinsics[0], [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    np.testing.assert_allclose(views.extrinsics[0], np.eye(4))


def test_resized_images_scale_the_intrinsics(tmp_path):
    images = write_model(tmp_path, "1 PINHOLE 128 96 100 110 62 46", size=(64, 48))  # half-size copies
    np.testing.assert_allclose(colmap_views(str(tmp_path), str(images)).intrinsics[0],
                               [[50, 0, 31], [0, 55, 23], [0, 0, 1]])


def test_distortion_is_refused_unless_undistorted(tmp_path, fixture_dir, capsys):
    images = write_model(tmp_path, "1 OPENCV 64 48 50 55 31 23 -0.1 0.02 0 0")
    code = main(["colmap", str(tmp_path), "--image-dir", str(images), "--model", str(fixture_dir), *FAST,
                 "--export-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "distortion" in err and "--undistorted" in err, err
    assert not (tmp_path / "out").exists()  # refused before any work
    views = colmap_views(str(tmp_path), str(images), undistorted=True)
    np.testing.assert_allclose(views.intrinsics[0], [[50, 0, 31], [0, 55, 23], [0, 0, 1]])
    with pytest.raises(Exception, match="FULL_OPENCV"):
        pinhole_matrix(Camera(1, "FULL_OPENCV", 64, 48, np.zeros(12)))


def test_missing_images_and_bad_folders(tmp_path, fixture_dir, capsys):
    write_model(tmp_path / "m", "1 PINHOLE 64 48 50 55 31 23", names=("a.png", "b.png"))
    (tmp_path / "m" / "images" / "b.png").unlink()
    views = colmap_views(str(tmp_path / "m"), str(tmp_path / "m" / "images"))
    assert [Path(p).name for p in views.paths] == ["a.png"] and views.skipped == ["b.png"]
    (tmp_path / "empty").mkdir()
    for args, word in (([str(tmp_path / "m"), "--image-dir", str(tmp_path / "empty")], "none of the 2 images"),
                       ([str(tmp_path / "empty"), "--image-dir", str(tmp_path / "empty")], "not a COLMAP model")):
        code = main(["colmap", *args, "--model", str(fixture_dir), *FAST])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and word in err, err
