"""The part of a carried object that is in sight: its key view, moved by the track's motion,
compared with the frame.

A track carries one mask of the whole object (the model's, or a stored whole view after a
return) by a similarity. While something passes in front of the object, or while the object
comes out from behind something, that mask covers the occluder too: a planner grasping or
avoiding "the mug" needs the pixels that are the mug. The part in sight is where the key
frame's grey image, warped onto this frame by the track's motion, still agrees with the frame:
an occluder (or the background under the model's overhanging cells) differs from the object it
hides. The comparison removes one brightness offset (the median of the small differences over
the mask: a lighting change is not an occluder, and an occluder hiding most of the object does
not set it) and votes over a small window (a textured object's edges
differ by a sub-pixel misfit, and a pixel of an occluder may match by chance).

:func:`part_in_sight` is the one measure of how much of an object is in sight (the track
carried frame to frame hides it under MIN_IN_SIGHT; a part of a hidden object found between
answers must show as much). :func:`changed` tells what came into sight since a track was lost
from what was there all along (a patch of the occluder that looks like a strip of the object).

Computed only for tracks that may be partly hidden (OCCLUDED by their points, or keyed on a
whole view they are not seen whole in): a fully visible track keeps the model's mask as
carried. Working resolution, on the carried mask's box only (~0.3 ms for a 150-px object).
"""

from __future__ import annotations

import cv2
import numpy as np

from stamp_ros.tracking import motion

DIFF = 24
"""Grey levels (after the offset) above which a pixel of the warped key view and the frame
disagree: a textured object tracked to within a pixel stays under ~15 after the blur; an
occluder of another texture or colour differs by 40-100 on most of its pixels."""
BLUR = 5
"""Gaussian kernel (px) both images are smoothed with before they are compared."""
VOTE = 9
"""Side (px) of the window a pixel's verdict is the majority of."""
MIN_IN_SIGHT = 0.2
"""Less of a partly hidden object in sight than this (:func:`part_in_sight`): it is hidden,
and predicted (a sliver at an occluder's edge is no view of it; its points are about to
fail). A part of a hidden object found between answers must show as much
(:mod:`.reacquire`), or the next frame would hide it again."""
POINT_REACH = 0.2
"""The part in sight lies within this share of the object's size (the square root of its
area) of the hull of its points still followed: pixels alone cannot tell a flat patch of the
object from a flat patch of what hides it; the points that fail on the occluder can."""
WHOLE_IN_SIGHT = 0.9
"""An object this much in sight is seen whole (no point hull needed; an ``amodal`` track's key
view is the object's again)."""


def near_points(pts: np.ndarray, size: tuple[int, int], reach: float) -> np.ndarray:
    """Working-size uint8 0/1: the convex hull of ``pts`` grown by ``reach`` px (where the
    points still followed on an object say its visible part is)."""
    w, h = size
    out = np.zeros((h, w), np.uint8)
    if not len(pts):
        return out
    hull = cv2.convexHull(np.round(pts).astype(np.int32).reshape(-1, 1, 2))
    cv2.fillConvexPoly(out, hull, 1)
    k = 2 * max(1, round(reach)) + 1
    return cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def visible_part(key_grey: np.ndarray, key_small: np.ndarray, transform: np.ndarray,
                 grey: np.ndarray) -> tuple[np.ndarray, int]:
    """(working-size uint8 0/1 mask of the part of ``key_small`` moved by ``transform`` that
    agrees with ``grey``, the moved mask's area): ``key_grey`` is the image ``key_small`` was
    drawn on. The area counts the moved mask inside the image only."""
    h, w = grey.shape
    out = np.zeros((h, w), np.uint8)
    x, y, bw, bh = cv2.boundingRect(key_small)
    if not bw or not bh:
        return out, 0
    corners = np.float64([[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]])
    moved = corners @ transform[:2, :2].T + transform[:2, 2]
    pad = VOTE + BLUR
    x0 = max(0, int(np.floor(moved[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(moved[:, 1].min())) - pad)
    x1 = min(w, int(np.ceil(moved[:, 0].max())) + pad)
    y1 = min(h, int(np.ceil(moved[:, 1].max())) + pad)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out, 0
    shifted = transform[:2].copy()
    shifted[0, 2] -= x0
    shifted[1, 2] -= y0
    size = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(key_small, shifted, size, flags=cv2.INTER_NEAREST)
    area = int(cv2.countNonZero(mask))
    if not area:
        return out, 0
    warped = cv2.warpAffine(key_grey, shifted, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    here = grey[y0:y1, x0:x1]
    diff = (cv2.GaussianBlur(here, (BLUR, BLUR), 0).astype(np.int16)
            - cv2.GaussianBlur(warped, (BLUR, BLUR), 0).astype(np.int16))
    inside = mask.astype(bool)
    near = diff[inside & (np.abs(diff) <= 2 * DIFF)]  # the object's own pixels, mostly
    if near.size:
        diff -= np.int16(np.median(near))
    agree = ((np.abs(diff) <= DIFF) & inside).astype(np.float32)
    vote = cv2.boxFilter(agree, -1, (VOTE, VOTE), normalize=False)
    total = cv2.boxFilter(mask.astype(np.float32), -1, (VOTE, VOTE), normalize=False)
    seen = (vote * 2 > total) & inside
    out[y0:y1, x0:x1] = seen
    return out, area


def changed(before: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Working-size uint8 0/1: where ``grey`` differs from ``before`` (an earlier frame of the
    same view, aligned with it) by more than DIFF after the blur. What an object coming into
    sight covers changed; a patch of the occluder that happens to look like a strip of the
    object was there before."""
    diff = cv2.absdiff(cv2.GaussianBlur(grey, (BLUR, BLUR), 0),
                       cv2.GaussianBlur(before, (BLUR, BLUR), 0))
    return (diff > DIFF).astype(np.uint8)


def part_in_sight(key_grey: np.ndarray, key_small: np.ndarray, core: np.ndarray,
                  transform: np.ndarray, grey: np.ndarray, pts: np.ndarray, whole: int,
                  whole_core: int) -> tuple[np.ndarray, float]:
    """(the part of an object in sight on ``grey``, working-size uint8 0/1; its share of the
    whole object). The object is ``key_small`` on ``key_grey`` (``core``: that mask without
    the model's overhanging cells), carried by ``transform`` (key -> ``grey``), followed on
    ``pts``; ``whole`` and ``whole_core`` are its mask's and core's areas seen whole (a
    partial key shows less).

    The part in sight is where the moved key view agrees with the frame (:func:`visible_part`),
    near the points unless nearly all of it agrees. Its share is counted on the core (the
    model's cells overhang the object, and the background they cover agrees with the key view
    wherever the object has not moved from it). One measure for the track carried frame to
    frame and for a part of it found between answers."""
    h, w = grey.shape
    scale2 = abs(float(np.linalg.det(transform[:2, :2])))
    seen, _ = visible_part(key_grey, key_small, transform, grey)
    if cv2.countNonZero(seen) < WHOLE_IN_SIGHT * whole * scale2:
        seen &= near_points(pts, (w, h), POINT_REACH * float(np.sqrt(whole * scale2)))
    inside = cv2.countNonZero(seen & motion.warp_mask(core, transform, (w, h)))
    return seen, min(1.0, inside / max(1.0, whole_core * scale2))
