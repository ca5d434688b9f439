"""Taking a hidden object back between model answers: its stored view, looked for where its
motion (or the camera's) puts it.

The model answers every few hundred milliseconds; an object that comes out from behind an
occluder, or back into view after the camera looked away, would stay absent until the next
answer that sees it. A hidden track therefore keeps a :class:`Template`: the grey working
image of an answer that saw it whole, the corners on the core of its mask (the model's cells
overhang the object; points there belong to the background) and that mask. Every few frames,
for a hidden track whose predicted box is in view, :func:`find` looks for the template there:

* geometric: the template's corners are followed from the template frame to this frame with
  forward-backward-checked Lucas-Kanade seeded at the predicted position, and one similarity
  must explain most of them (MIN_SHARE of the template's points, scale and rotation close to
  the template's): the object's own layout of corners, not just its colours;
* photometric: the template warped by that similarity must correlate with the frame over the
  mask's core near the corners found (the part in sight: a partly hidden object, or one
  coming into the image, shows part of its core) (zero-mean normalised cross-correlation at
  least MIN_ZNCC);
* positional: the similarity must put the object within ``radius`` of the prediction.

All three are strict on purpose: a wrongly re-acquired object is worse than one taken back by
the next answer. Look-alikes (the same texture) pass the first two for each other; the tracker
rejects a find that lies on a live track and reports the ones decided by position
(``ambiguous_with``). Costs one Lucas-Kanade call on the working images per try.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stamp_ros.tracking import motion
from stamp_ros.tracking.image import WorkingFrame
from stamp_ros.tracking.visibility import near_points

MIN_POINTS = 10
"""A template with fewer corners than this is never looked for (too weak a check)."""
MIN_FOUND = 8
"""Fewer of its corners found again than this is never a find, whatever the share."""
MIN_SHARE = 0.25
"""Share of the template's corners that must be found, forward-backward consistent and
explained by one similarity (an object coming out from behind something or into the image
shows part of them)."""
MIN_IN_VIEW = 0.2
"""Share of the template's core that must be in view and near the corners found (the
correlation is computed there): the part of it in sight (:data:`.follow.MIN_IN_SIGHT`)."""
POINT_REACH = 0.2
"""The part in sight: the hull of the corners found, grown by this share of the core's size
(:data:`.follow.POINT_REACH`)."""
SCALE_RANGE = (0.8, 1.25)
MAX_ROTATION = np.deg2rad(20.0)
MIN_ZNCC = 0.6
"""Zero-mean normalised cross-correlation of the warped template with the frame over the core
(different objects of the same kind of texture: below 0.3; the same object moving: 0.8-0.95)."""
SEARCH_INSET = 0.15
"""The correlation search uses the core's box less this share on each side (mostly object)."""
SEARCH_MAX = 1.0
"""The search window reaches at most this many template sizes from the prediction."""
CORE_ERODE = 0.2
"""The template's points and correlation use the mask eroded by this share of its box's
smaller side (the model's 28-px cells reach onto the background)."""


@dataclass
class Template:
    """An answer's view of a track, to look for it again."""

    seq: int
    grey: np.ndarray
    """The answered frame's grey working image."""
    pts: np.ndarray
    """(N, 2) float32 corners inside ``core`` (working px of ``grey``)."""
    core: np.ndarray
    """Working-size uint8 0/1: the eroded mask."""
    centre: np.ndarray
    """Centroid of the (uneroded) working mask."""
    small: np.ndarray
    """Working-size uint8 0/1: the answered mask."""
    mask: np.ndarray
    """Full-resolution uint8 0/1: the answered mask (a track found again is keyed on it)."""
    box: tuple[int, int, int, int]
    area: int
    """Full-resolution mask area (a later answer replaces the template only when it shows as
    much of the object: a half-hidden view would be a worse template)."""

    @classmethod
    def of(cls, seq: int, frame: WorkingFrame, small: np.ndarray, centre: np.ndarray,
           mask: np.ndarray, box: tuple[int, int, int, int], area: int, max_points: int
           ) -> Template | None:
        """The template of an answered mask (``small``: working size, ``mask``: full), None
        when it has too few corners."""
        _, _, w, h = cv2.boundingRect(small)
        k = max(3, int(CORE_ERODE * min(w, h)) | 1)
        core = cv2.erode(small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        pts = motion.detect_points(frame.grey, core, max_points)
        if len(pts) < MIN_POINTS:
            return None
        return cls(seq, frame.grey, pts, core, centre.copy(), small, mask, box, area)


@dataclass
class Found:
    transform: np.ndarray
    """Template frame -> this frame (working px)."""
    pts_key: np.ndarray
    """The template's points that were found (template frame)."""
    pts_cur: np.ndarray
    """Where they are on this frame."""
    zncc: float


def find(template: Template, frame: WorkingFrame, guess: np.ndarray, radius: float,
         fb_threshold: float) -> Found | None:
    """The template on ``frame``, starting from ``guess`` (template frame -> this frame, the
    predicted motion), at most ``radius`` working px from where the guess puts its centre;
    None unless every check of the module docstring passes."""
    if template.grey.shape != frame.grey.shape:
        return None
    pts = template.pts
    need = max(MIN_FOUND, int(np.ceil(MIN_SHARE * len(pts))))
    best = None
    for start in (guess, _search(template, frame, guess, radius)):
        if start is None:
            continue
        new, ok = motion.track_points(WorkingFrame(template.grey, frame.full_size), frame, pts,
                                      fb_threshold, guess=motion.apply(start, pts))
        if int(ok.sum()) < need:
            continue
        fit = motion.fit_similarity(pts[ok], new[ok])
        if fit is not None and fit.inlier_count >= need and (
                best is None or fit.inlier_count > best[0].inlier_count):
            best = (fit, ok, new)
    if best is None:
        return None
    fit, ok, new = best
    t = fit.transform
    scale = motion.scale_of(t)
    angle = abs(float(np.arctan2(t[1, 0], t[0, 0])))
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] or angle > MAX_ROTATION:
        return None
    centre = template.centre[None].astype(np.float32)
    if float(np.linalg.norm(motion.apply(t, centre) - motion.apply(guess, centre))) > radius:
        return None
    found = new[ok][fit.inliers]
    reach = POINT_REACH * float(np.sqrt(template.core.sum()))
    score = zncc(template, frame, t, near_points(found, frame.size, reach))
    if score < MIN_ZNCC:
        return None
    return Found(t, pts[ok][fit.inliers], found, score)


def _search(template: Template, frame: WorkingFrame, guess: np.ndarray, radius: float
            ) -> np.ndarray | None:
    """``guess`` moved by the translation that best aligns the template's core box with the
    frame within ``radius`` (normalised cross-correlation, one ``matchTemplate`` over the
    window): a motion prediction is off by tens of pixels after a second hidden, more than
    Lucas-Kanade's reach. None when the window is off the image or nothing correlates."""
    x, y, w, h = cv2.boundingRect(template.core)
    mx, my = int(SEARCH_INSET * w), int(SEARCH_INSET * h)
    patch = template.grey[y + my:y + h - my, x + mx:x + w - mx]
    if patch.shape[0] < 8 or patch.shape[1] < 8:
        return None
    tl = motion.apply(guess, np.float32([[x + mx, y + my]]))[0]
    r = int(min(radius, SEARCH_MAX * max(w, h)))
    fw, fh = frame.size
    x0, y0 = max(0, int(tl[0]) - r), max(0, int(tl[1]) - r)
    x1 = min(fw, int(tl[0]) + r + patch.shape[1])
    y1 = min(fh, int(tl[1]) + r + patch.shape[0])
    if x1 - x0 < patch.shape[1] or y1 - y0 < patch.shape[0]:
        return None
    scores = cv2.matchTemplate(frame.grey[y0:y1, x0:x1], patch, cv2.TM_CCOEFF_NORMED)
    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
    if best < MIN_ZNCC:
        return None
    out = guess.copy()
    out[:2, 2] += np.array([x0 + bx, y0 + by], np.float64) - tl
    return out


def zncc(template: Template, frame: WorkingFrame, transform: np.ndarray,
         region: np.ndarray | None = None) -> float:
    """Zero-mean normalised cross-correlation of the template's core, moved by ``transform``,
    with ``frame`` (over the part of the moved core inside the frame and ``region``, the part
    its points were found on; 0 when under MIN_IN_VIEW of it is)."""
    size = frame.size
    core = motion.warp_mask(template.core, transform, size).astype(bool)
    if region is not None:
        core &= region.astype(bool)
    inside = int(core.sum())
    if inside < MIN_IN_VIEW * max(1, int(template.core.sum())) or inside < 16:
        return 0.0
    warped = cv2.warpAffine(template.grey, transform[:2], size, flags=cv2.INTER_LINEAR)
    a = warped[core].astype(np.float32)
    b = frame.grey[core].astype(np.float32)
    a -= a.mean()
    b -= b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0
