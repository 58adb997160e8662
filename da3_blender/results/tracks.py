"""Feature tracks of a camera solve (:mod:`da3_blender.solve`), as plain arrays.

A track is one scene point seen in several views: ``xyz`` (T,3) its position in the prediction's
world frame, and per observation ``obs_track`` (O,) which track, ``obs_view`` (O,) which view and
``obs_xy`` (O,2) where, in source-image pixels (top-left corner (0, 0), COLMAP's convention),
observations sorted by track then view. The result file stores them as ``tracks_xyz``,
``tracks_rgb`` and ``tracks_obs`` (O,4: track, view, x, y); the scene builders make MovieClip
markers of them and the COLMAP export writes them with every observation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREFIX = "tracks_"


@dataclass
class Tracks:
    xyz: np.ndarray  # (T,3) float64
    obs_track: np.ndarray  # (O,) int64
    obs_view: np.ndarray  # (O,) int64
    obs_xy: np.ndarray  # (O,2) float64
    rgb: np.ndarray | None = None  # (T,3) uint8

    def __len__(self) -> int:
        return int(len(self.xyz))

    def check(self, num_views: int) -> str | None:
        """A problem with the arrays (as a phrase), or None."""
        t, o = len(self.xyz), len(self.obs_track)
        if self.xyz.shape != (t, 3) or self.obs_view.shape != (o,) or self.obs_xy.shape != (o, 2):
            return "tracks have inconsistent shapes"
        if o and (self.obs_track.min() < 0 or self.obs_track.max() >= t or self.obs_view.min() < 0
                  or self.obs_view.max() >= num_views):
            return f"tracks refer to points or views that do not exist ({t} points, {num_views} views)"
        return None

    def to_arrays(self) -> dict[str, np.ndarray]:
        obs = np.concatenate([self.obs_track[:, None], self.obs_view[:, None], self.obs_xy], axis=1).astype(np.float64)
        rgb = self.rgb if self.rgb is not None else np.full((len(self), 3), 128, np.uint8)
        return {PREFIX + "xyz": np.asarray(self.xyz, np.float64), PREFIX + "rgb": np.asarray(rgb, np.uint8),
                PREFIX + "obs": obs}

    @classmethod
    def from_arrays(cls, data) -> "Tracks | None":
        if PREFIX + "xyz" not in data or PREFIX + "obs" not in data:
            return None
        obs = np.asarray(data[PREFIX + "obs"], np.float64).reshape(-1, 4)
        rgb = data.get(PREFIX + "rgb") if hasattr(data, "get") else None
        return cls(np.asarray(data[PREFIX + "xyz"], np.float64).reshape(-1, 3), obs[:, 0].astype(np.int64),
                   obs[:, 1].astype(np.int64), obs[:, 2:4].copy(), None if rgb is None else np.asarray(rgb, np.uint8))

    def per_view(self, view: int) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, xy) of the observations in ``view``."""
        sel = self.obs_view == view
        return self.obs_track[sel], self.obs_xy[sel]
