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
from stamp_ros.tracking.reacquire import TEMPLATE_MIN_DISTANCE, core_of
from stamp_ros.tracking.state import OUT_OF_VIEW, PREDICTED, REMEMBERED
from stamp_ros.tracking.track import MAX_OBJECT_POINTS, Track
from stamp_ros.tracking.visibility import MIN_IN_SIGHT, WHOLE_IN_SIGHT, part_in_sight

TEMPLATE_AREA = 0.8
"""A view of an object at least this share of its template's (the largest recent view of it,
:mod:`.reacquire`) shows it whole; a smaller one is a partial view."""
OCCLUDED_BELOW = 0.7
"""A track keeping fewer than this share of the points it had after its last (re)key is
reported OCCLUDED (and looks for no new points: they would land on the occluder)."""
REDETECT_PAUSE = 10
"""Frames to wait before looking for new points again when the last look found (almost) none
(a weakly textured object would otherwise cost a corner search on every frame)."""
MIN_POINTS = 5
"""Fewer consistent points than this and an object's motion is unknown: lost."""
MIN_PARTIAL_POINTS = 3
"""The same for a partly hidden object, whose step is a translation (two numbers: the median
of three points tolerates one wrong): an object coming out from behind something shows a strip
of a few corners at first (:func:`.reacquire.find`), and gains more as it comes out."""
LOST_FAILED_FRACTION = 0.5
"""An object whose points fail the forward-backward check more than this on one frame is lost."""
MIN_INLIER_FRACTION = 0.5
"""Fewer of its consistent points explained by one similarity: not rigid enough, lost. (Points
failing the forward-backward check no longer end a track: an object whose visible part still
moves rigidly is carried on it, OCCLUDED; LOST_FAILED_FRACTION only names the old rule.)"""
MIN_VISIBLE_FRACTION = 0.25
"""Less of the carried mask inside the image than this: the object left the image, lost."""
KEY_NCC = 0.5
"""A point of a partly hidden object whose 7-px patch correlates less than this with its patch
in the key view has slid onto what hides the object: it is dropped."""
EMERGING_SLACK = 0.05
"""A track found in part between answers (coming out from behind something or into the image)
is hidden again only under MIN_IN_SIGHT less this, until it is this much above it: its share
in sight grows as it comes out, and the estimate wobbles by a few hundredths from frame to
frame (a find at 21% measured 19% on the next frame, and the object flickered out for three
frames)."""
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


def in_sight(t: Track, frame: WorkingFrame) -> np.ndarray:
    """The part of a partly hidden track in sight on ``frame`` (working size, uint8 0/1,
    :func:`.visibility.part_in_sight`); sets ``t.in_sight`` (its share of the whole object)
    and ends ``amodal`` once it is seen whole again."""
    whole = max(cv2.countNonZero(t.key_small),
                cv2.countNonZero(t.template.small) if t.template is not None else 0)
    core = core_of(t.key_small)
    whole_core = max(int(core.sum()), int(t.template.core.sum()) if t.template else 0)
    seen, t.in_sight = part_in_sight(t.key_grey, t.key_small, core, t.transform, frame.grey,
                                     t.pts_cur, whole, whole_core)
    if t.amodal and t.in_sight >= WHOLE_IN_SIGHT:
        t.amodal = False  # seen whole again: its key is the object as it is now
    return seen


def cut(mask: np.ndarray, seen: np.ndarray, frame: WorkingFrame
        ) -> tuple[np.ndarray, int, tuple[int, int, int, int]]:
    """A full-resolution mask cut to the working-size part in sight; (mask, area, box)."""
    mask &= cv2.resize(seen, frame.full_size, interpolation=cv2.INTER_NEAREST)
    return mask, int(cv2.countNonZero(mask)), motion.box_of(mask)


def whole_key(t: Track) -> bool:
    """The track's key shows the object as whole as its template does (TEMPLATE_AREA): a key
    from a partial view (the object going behind something) carries points of the occluder
    along, and the motion fitted to them lags the object's."""
    return t.template is None or t.key_area >= TEMPLATE_AREA * t.template.area


def occluded(t: Track) -> bool:
    """Fewer than OCCLUDED_BELOW of the points it had after its last (re)key are left."""
    return bool(t.support) and len(t.pts_cur) < OCCLUDED_BELOW * t.support


def move(t: Track, seq: int, frame: WorkingFrame, new: np.ndarray, ok: np.ndarray
         ) -> tuple[str, str]:
    """Fit the track's motion on frame ``seq`` from its points' new positions ``new`` (``ok``:
    trusted); returns why it leaves the output and the hidden state it goes to (("", "") = it
    moved, fully or partly visible, and ``t`` is updated)."""
    partial = t.amodal or occluded(t)
    if partial and t.key_grey is not None and ok.any():
        # a point that slid onto the occluder's edge follows it consistently from frame to
        # frame, but no longer looks like the object it was on in the key view
        ok = ok.copy()
        ok[ok] = motion.patch_ncc(t.key_grey, t.pts_key[ok], frame.grey, new[ok]) >= KEY_NCC
    n_ok = int(ok.sum())
    need = MIN_PARTIAL_POINTS if partial else MIN_POINTS
    if n_ok < need:
        return f"only {n_ok} of its points could be followed (hidden?)", PREDICTED
    if partial:
        # partly hidden: this frame's step is a translation (scale and rotation as carried)
        step = motion.fit_translation(t.pts_cur[ok], new[ok])
        fit = step and motion.SimilarityFit(step.transform @ t.transform, step.inliers)
    else:
        fit = motion.fit_similarity(t.pts_key[ok], new[ok])
    if fit is None or fit.inlier_count < max(need, MIN_INLIER_FRACTION * n_ok):
        return "its motion is not rigid enough to follow (too few inliers)", PREDICTED
    scale = motion.scale_of(fit.transform)
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return f"its mask collapsed (scale {scale:.2f} of the model's mask)", REMEMBERED
    mask, area, box = motion.place_mask(
        t.key_mask, t.key_box, motion.full_resolution(fit.transform, frame), frame.full_size)
    visible = area / max(1.0, t.key_area * scale * scale)
    if visible < MIN_VISIBLE_FRACTION:
        return f"it left the image ({visible:.0%} of it still inside)", OUT_OF_VIEW
    t.transform = fit.transform
    t.pts_key, t.pts_cur = t.pts_key[ok][fit.inliers], new[ok][fit.inliers]
    t.history.append((seq, t.transform.copy()))
    seen = None
    t.in_sight = 1.0
    if t.key_grey is not None and (t.amodal or occluded(t)):
        seen = in_sight(t, frame)
        if t.in_sight < MIN_IN_SIGHT - (EMERGING_SLACK if t.emerging else 0.0):
            return f"hidden ({t.in_sight:.0%} of it in sight)", PREDICTED
        t.emerging &= t.in_sight < MIN_IN_SIGHT + EMERGING_SLACK
        mask, area, box = cut(mask, seen, frame)
    t.mask, t.area, t.box = mask, area, box
    if seen is None and occluded(t):
        return "", ""  # no new points: they would land on the occluder
    if len(t.pts_cur) < MAX_OBJECT_POINTS // 2 and (seq >= t.redetect_at or seen is not None):
        # on a partly hidden object only where it is in sight, as densely as a stored view's
        # (its points grow back as it comes out; the share it had stays the reference for
        # OCCLUDED); it has few points left, so no pause
        if seen is None:
            region = motion.warp_mask(t.key_small, t.transform, frame.size)
            spacing = motion.FEATURE_MIN_DISTANCE
        else:
            region, spacing = seen, TEMPLATE_MIN_DISTANCE
        more = motion.detect_points(frame.grey, region, MAX_OBJECT_POINTS - len(t.pts_cur),
                                    avoid=t.pts_cur, min_distance=spacing)
        if len(more) < 3 and seen is None:
            t.redetect_at = seq + REDETECT_PAUSE
        t.pts_cur = np.concatenate([t.pts_cur, more])
        t.pts_key = np.concatenate([t.pts_key, motion.apply(np.linalg.inv(t.transform), more)])
        if seen is None:
            t.support = len(t.pts_cur)
    return "", ""
