"""A live track carried onto one more frame: its points, its fitted motion, its mask, or why
it leaves the output.

The per-frame rule of :meth:`~.tracker.QueryTracker.step`, for one track, given where its
points went (one batched Lucas-Kanade call for every track and the scene's points is the
tracker's job): a similarity fitted key -> this frame places the model's mask (:mod:`.motion`);
a track carried on part of its points is OCCLUDED; too few points, motion that is not rigid, a
collapsed mask or one that left the image end its time in the output, with the hidden state
it goes to (:mod:`.state`). Apart from the tracker so that the rule reads in one place and
the tracker keeps only the bookkeeping around it.
"""

from __future__ import annotations

import cv2
import numpy as np

from stamp_ros.tracking import motion
from stamp_ros.tracking.image import WorkingFrame
from stamp_ros.tracking.state import OUT_OF_VIEW, PREDICTED, REMEMBERED
from stamp_ros.tracking.track import MAX_OBJECT_POINTS, Track

OCCLUDED_BELOW = 0.7
"""A track keeping fewer than this share of the points it had after its last (re)key is
reported OCCLUDED (and looks for no new points: they would land on the occluder)."""
REDETECT_PAUSE = 10
"""Frames to wait before looking for new points again when the last look found (almost) none
(a weakly textured object would otherwise cost a corner search on every frame)."""
MIN_POINTS = 5
"""Fewer consistent points than this and an object's motion is unknown: lost."""
LOST_FAILED_FRACTION = 0.5
"""An object whose points fail the forward-backward check more than this on one frame is lost."""
MIN_INLIER_FRACTION = 0.5
"""Fewer of its consistent points explained by one similarity: not rigid enough, lost. (Points
failing the forward-backward check no longer end a track: an object whose visible part still
moves rigidly is carried on it, OCCLUDED; LOST_FAILED_FRACTION only names the old rule.)"""
MIN_VISIBLE_FRACTION = 0.25
"""Less of the carried mask inside the image than this: the object left the image, lost."""
SCALE_RANGE = (0.5, 2.0)
"""Scale relative to the model's mask outside this range: the mask collapsed (or exploded)."""
REGION_PAD = 0.15
"""The region of a live track (kept out of the camera's motion: :mod:`.scene`) is its mask's
box moved to the newest frame, grown by this share of its size on each side (plus 4 px): the
model's mask may miss part of the object, and the object moves on while the region is used."""


def region(tracks: list[Track], size: tuple[int, int]) -> np.ndarray:
    """Working-size uint8 image, 1 on the (padded) boxes of ``tracks`` on the newest frame."""
    w, h = size
    out = np.zeros((h, w), np.uint8)
    for t in tracks:
        if t.key_small is None:
            continue
        x, y, bw, bh = cv2.boundingRect(t.key_small)
        if not bw or not bh:
            continue
        corners = np.float32([[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]])
        moved = motion.apply(t.transform, corners)
        (x0, y0), (x1, y1) = moved.min(0), moved.max(0)
        pad = REGION_PAD * max(x1 - x0, y1 - y0) + 4
        cv2.rectangle(out, (int(x0 - pad), int(y0 - pad)), (int(x1 + pad), int(y1 + pad)), 1,
                      -1)
    return out


def occluded(t: Track) -> bool:
    """Fewer than OCCLUDED_BELOW of the points it had after its last (re)key are left."""
    return bool(t.support) and len(t.pts_cur) < OCCLUDED_BELOW * t.support


def move(t: Track, seq: int, frame: WorkingFrame, new: np.ndarray, ok: np.ndarray
         ) -> tuple[str, str]:
    """Fit the track's motion on frame ``seq`` from its points' new positions ``new`` (``ok``:
    trusted); returns why it leaves the output and the hidden state it goes to (("", "") = it
    moved, fully or partly visible, and ``t`` is updated)."""
    n_ok = int(ok.sum())
    if n_ok < MIN_POINTS:
        return f"only {n_ok} of its points could be followed (hidden?)", PREDICTED
    fit = motion.fit_similarity(t.pts_key[ok], new[ok])
    if fit is None or fit.inlier_count < max(MIN_POINTS, MIN_INLIER_FRACTION * n_ok):
        return "its motion is not rigid enough to follow (too few inliers)", PREDICTED
    scale = motion.scale_of(fit.transform)
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return f"its mask collapsed (scale {scale:.2f} of the model's mask)", REMEMBERED
    mask, area, box = motion.place_mask(
        t.key_mask, t.key_box, motion.full_resolution(fit.transform, frame), frame.full_size)
    visible = area / max(1.0, t.key_area * scale * scale)
    if visible < MIN_VISIBLE_FRACTION:
        return f"it left the image ({visible:.0%} of it still inside)", OUT_OF_VIEW
    t.transform, t.mask, t.area, t.box = fit.transform, mask, area, box
    t.pts_key, t.pts_cur = t.pts_key[ok][fit.inliers], new[ok][fit.inliers]
    if (not occluded(t) and len(t.pts_cur) < MAX_OBJECT_POINTS // 2
            and seq >= t.redetect_at):
        region = motion.warp_mask(t.key_small, t.transform, frame.size)
        more = motion.detect_points(frame.grey, region, MAX_OBJECT_POINTS - len(t.pts_cur),
                                    avoid=t.pts_cur)
        if len(more) < 3:
            t.redetect_at = seq + REDETECT_PAUSE
        t.pts_cur = np.concatenate([t.pts_cur, more])
        t.pts_key = np.concatenate([t.pts_key, motion.apply(np.linalg.inv(t.transform), more)])
        t.support = len(t.pts_cur)
    t.history.append((seq, t.transform.copy()))
    return "", ""
