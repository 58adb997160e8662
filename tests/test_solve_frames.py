"""A result's views -> the frames the camera solve (and the farm) decode again (issue 25, item 2).

A video's views carry scene frames (decoded index + the run's frame start); reading the frames again
must undo that, whatever the start: with start 1 the solve used to read each view's next frame, with
1001 it failed ("could not be decoded again"). Frames of a tiny clip whose brightness says its index.
"""

from __future__ import annotations

import numpy as np
import pytest

from da3_blender.inputs.collect import collect_inputs
from da3_blender.prediction import Prediction, load_result, save_result, video_frame_indices
from da3_blender.solve import pipeline

FRAMES = 12


@pytest.fixture(scope="module")
def counted_clip(tmp_path_factory):
    """12 frames of 64x48 at 24 fps; frame i is flat grey 10 + 20 i with a sliding stripe (H.264)."""
    from moviepy import ImageSequenceClip

    xx = np.mgrid[0:48, 0:64][1]
    frames = [np.dstack([np.where((xx + 4 * i) % 16 < 8, 10 + 20 * i, 20 + 20 * i).astype(np.uint8)] * 3)
              for i in range(FRAMES)]
    path = tmp_path_factory.mktemp("counted") / "counted.mp4"
    ImageSequenceClip(frames, fps=24).write_videofile(str(path), codec="libx264", audio=False, logger=None)
    return path


def _result(shot, tmp_path) -> Prediction:
    """A saved and loaded result of ``shot`` (its frame numbers and video meta as inference writes them)."""
    from da3_blender.inference import _meta

    n = len(shot.images)
    pred = Prediction(depth=np.ones((n, 6, 8), np.float32), extrinsics=np.tile(np.eye(4)[:3], (n, 1, 1)).astype(np.float32),
                      intrinsics=np.tile(np.diag([8.0, 8.0, 1.0]), (n, 1, 1)).astype(np.float32),
                      orig_size=np.tile([64, 48], (n, 1)), proc_to_orig=np.tile(np.diag([8.0, 8.0, 1.0]), (n, 1, 1)),
                      frame_numbers=shot.frame_numbers, timestamps=shot.timestamps, source_paths=list(shot.source_paths),
                      meta=_meta("da3-small", shot))
    return load_result(save_result(tmp_path / "result.npz", pred))


@pytest.mark.parametrize("frame_start", [1, 1001])
def test_refine_reads_the_frames_the_result_came_from(counted_clip, tmp_path, frame_start):
    shot = collect_inputs([counted_clip], fps=12, frame_start=frame_start)  # every 2nd frame: 0, 2, 4, ...
    assert shot.frame_numbers.tolist() == list(range(frame_start, frame_start + FRAMES, 2))
    pred = _result(shot, tmp_path)
    np.testing.assert_array_equal(video_frame_indices(pred), np.arange(0, FRAMES, 2))
    frames = pipeline._check(pred, None, "fixed", "auto")  # what refine(pred) / measure(pred) decode
    assert len(frames) == len(shot.images)
    for i, (got, want) in enumerate(zip(frames, shot.images)):
        np.testing.assert_array_equal(got, want)  # the very frame the network saw
        assert abs(float(np.mean(got)) - (15 + 40 * i)) < 4, i  # frame 2i: grey 15 + 20 (2i) on average


def test_a_farm_chunk_decodes_the_same_frames(counted_clip):
    from da3_blender.farm.tasks import chunk_inputs

    shot = collect_inputs([counted_clip], fps=12, frame_start=1001)
    views = {"kind": "video", "paths": list(shot.source_paths), "frame_numbers": shot.frame_numbers.tolist(),
             "timestamps": shot.timestamps.tolist(), "video": shot.video}
    part = chunk_inputs({"views": views, "job": {"options": {}}}, 2, 5)
    for got, want in zip(part.images, list(shot.images)[2:5]):
        np.testing.assert_array_equal(got, want)


def test_image_files_and_unnumbered_views_are_not_video_frames(tmp_path):
    pred = Prediction(depth=np.ones((2, 4, 4), np.float32), frame_numbers=np.array([1001, 1002]),
                      meta={"frame_numbers": "scene", "video": {"kind": "sequence", "frame_start": 1001}})
    assert video_frame_indices(pred) is None  # a sequence: each view is its own file
    pred.meta["video"]["kind"] = "video"
    pred.frame_numbers = np.array([-1, 1002])
    assert video_frame_indices(pred) is None
    pred.frame_numbers = np.array([3, 5])
    pred.meta = {"video": {"kind": "video"}}  # written before frame numbers were scene frames: the index itself
    np.testing.assert_array_equal(video_frame_indices(pred), [3, 5])
