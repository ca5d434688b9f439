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

An object seen in part (coming out from behind something, or into the image: too few of its
corners survive Lucas-Kanade) is found by a strip of the stored view instead, correlated where
the prediction puts it (:func:`_strips`) or along the image's borders (:func:`entering`), and
checked on what came into sight there since the track was lost (:func:`_in_part`).

All are strict on purpose: a wrongly re-acquired object is worse than one taken back by
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
from stamp_ros.tracking.visibility import (
    MIN_IN_SIGHT,
    POINT_REACH,
    near_points,
    part_in_sight,
    visible_part,
)

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
correlation is computed there): the part of it in sight
(:data:`.visibility.MIN_IN_SIGHT`)."""
TEMPLATE_POINTS = 100
TEMPLATE_MIN_DISTANCE = 3
"""A template keeps denser corners than a followed track (working px apart): an object seen in
part (coming out from behind something, or into the image) shows a share of them, and a find
needs MIN_FOUND."""
FIND_LEVELS = 2
"""Pyramid levels of a find's Lucas-Kanade: the start is within the search radius of the
object (a quarter-size level covers it), and on the eighth-size level a 15-px window around a
60-px object seen in part is mostly the occluder or the background: the backward search left
the object from there (0 of 11 visible corners back, at the exact motion)."""
SCALE_RANGE = (0.8, 1.25)
MAX_ROTATION = np.deg2rad(20.0)
MIN_ZNCC = 0.6
"""Zero-mean normalised cross-correlation of the warped template with the frame over the core
(different objects of the same kind of texture: below 0.3; the same object moving: 0.8-0.95)."""
SEARCH_INSET = 0.15
"""The correlation search uses the core's box less this share on each side (mostly object)."""
SEARCH_MAX = 1.0
"""The search window reaches at most this many template sizes from the prediction."""
ENTRY_STRIP = 0.3
"""Share of the core box's width (height) that the border search correlates: the part of an
object that comes into view first."""
ENTRY_DEPTH = 0.4
"""How far into the image (share of the core box) the border search looks for that strip."""
PART_ZNCC = 0.8
"""Correlation of a strip of the stored view with the frame that makes a guess for a part of
the object (:func:`_strips`, :func:`entering`; the find still checks it)."""
MIN_NEW = 0.05
"""Share of the stored core that must have come into sight for a find in part
(:func:`_in_part`): agree with the stored view and differ from the frame the track was lost
on. On the benchmark's pillar (sequence b) the patches that agree with the stored view reach
0.005 (they did not change); the object a quarter of which has come out, 0.08 (the core's
margin, and the flat patches that look the same as what they cover, are not counted)."""
MIN_PART_POINTS = 4
"""Corners a part found by correlation is carried on from there (the stored ones followed to
it, and new ones on it): one more than a partly hidden track needs
(:data:`.follow.MIN_PARTIAL_POINTS`), as one may fail on the next frame."""
PART_FB = 1.5
"""Forward-backward error (working px) of a stored corner followed to a part found in part,
and its distance from the median of the others' moves."""
PART_SHIFT = 4.0
"""A stored corner followed further than this from where the correlation put it (working px)
has left for something else: the correlation is right to a pixel or two."""
CORE_ERODE = 0.2
"""The template's points and correlation use the mask eroded by this share of its box's
smaller side (the model's 28-px cells reach onto the background)."""


def core_of(small: np.ndarray) -> np.ndarray:
    """A model mask eroded by CORE_ERODE of its box's smaller side: the object without the
    cells that overhang it."""
    _, _, w, h = cv2.boundingRect(small)
    k = max(3, int(CORE_ERODE * min(w, h)) | 1)
    return cv2.erode(small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


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
           mask: np.ndarray, box: tuple[int, int, int, int], area: int
           ) -> Template | None:
        """The template of an answered mask (``small``: working size, ``mask``: full), None
        when it has too few corners."""
        core = core_of(small)
        pts = motion.detect_points(frame.grey, core, TEMPLATE_POINTS,
                                   min_distance=TEMPLATE_MIN_DISTANCE)
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
    in_part: bool = False
    """Found by a part of it that came into sight (:func:`_in_part`)."""


def find(template: Template, frame: WorkingFrame, guess: np.ndarray, radius: float,
         fb_threshold: float, changed_since: np.ndarray | None = None) -> Found | None:
    """The template on ``frame``, starting from ``guess`` (template frame -> this frame, the
    predicted motion), at most ``radius`` working px from where the guess puts its centre;
    None unless every check of the module docstring passes (or, given ``changed_since``, where
    ``frame`` differs from the frame the track was lost on, :func:`.visibility.changed`, for an
    object seen in part, those of :func:`_in_part`)."""
    in_part = changed_since is not None
    if template.grey.shape != frame.grey.shape:
        return None
    pts = template.pts
    need = max(MIN_FOUND, int(np.ceil(MIN_SHARE * len(pts))))
    strips = _strips(template, frame, guess, radius) if in_part else []
    best = None
    for start in (guess, _search(template, frame, guess, radius), *strips[:1]):
        if start is None:
            continue
        new, ok = motion.track_points(WorkingFrame(template.grey, frame.full_size), frame, pts,
                                      fb_threshold, guess=motion.apply(start, pts),
                                      levels=FIND_LEVELS)
        if int(ok.sum()) < need:
            continue
        fit = motion.fit_similarity(pts[ok], new[ok])
        if fit is not None and fit.inlier_count >= need and (
                best is None or fit.inlier_count > best[0].inlier_count):
            best = (fit, ok, new)
    centre = template.centre[None].astype(np.float32)
    expected = motion.apply(guess, centre)
    if best is None:
        return next(filter(None, (_in_part(template, frame, start, expected, radius,
                                           changed_since) for start in strips)), None)
    fit, ok, new = best
    t = fit.transform
    scale = motion.scale_of(t)
    angle = abs(float(np.arctan2(t[1, 0], t[0, 0])))
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] or angle > MAX_ROTATION:
        return None
    if float(np.linalg.norm(motion.apply(t, centre) - expected)) > radius:
        return None
    found = new[ok][fit.inliers]
    reach = POINT_REACH * float(np.sqrt(template.core.sum()))
    score = zncc(template, frame, t, near_points(found, frame.size, reach))
    if score < MIN_ZNCC:
        return None
    return Found(t, pts[ok][fit.inliers], found, score)


def _in_part(template: Template, frame: WorkingFrame, start: np.ndarray, expected: np.ndarray,
             radius: float, changed_since: np.ndarray) -> Found | None:
    """An object seen in part (coming out from behind something, or into the image), where too
    few of its stored corners can be followed (a 15-px strip of a 60-px object holds two or
    three of them, and their Lucas-Kanade windows reach onto what hides the rest): ``start``
    (a strip of the stored view correlating at least PART_ZNCC, :func:`_strips`) must put it
    within ``radius`` of ``expected``; the part of its core that came into sight there (agrees
    with the stored view, :mod:`.visibility`, and lies in ``changed_since``, where the frame
    differs from the one the track was lost on) must be at least MIN_NEW of the core and
    correlate
    with the stored view at least PART_ZNCC; the stored corners on it that follow the stored
    view consistently place it to under a pixel; it is carried on at least MIN_PART_POINTS
    corners, and at least MIN_IN_SIGHT of it is in sight as the track will measure it
    (:func:`.visibility.part_in_sight`)."""
    if float(np.linalg.norm(motion.apply(start, template.centre[None]) - expected)) > radius:
        return None
    size = frame.size
    seen, _ = visible_part(template.grey, template.small, start, frame.grey)
    # a patch of the occluder that agrees with the stored view was there all along
    new = motion.warp_mask(template.core, start, size) & seen & changed_since
    if cv2.countNonZero(new) < MIN_NEW * max(1, cv2.countNonZero(template.core)):
        return None
    inside = motion.apply(start, template.pts)
    xy = np.round(inside).astype(int)
    w, h = size
    on = ((xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h))
    on[on] = new[xy[on, 1], xy[on, 0]] != 0
    followed = np.empty((0, 2), np.float32)
    if on.any():
        moved, ok = motion.track_points(WorkingFrame(template.grey, frame.full_size), frame,
                                        template.pts[on], PART_FB, guess=inside[on], levels=1)
        shift = moved - inside[on]
        ok &= np.linalg.norm(shift, axis=1) <= PART_SHIFT
        if ok.any():  # consistent with each other
            ok &= np.linalg.norm(shift - np.median(shift[ok], axis=0), axis=1) <= PART_FB
        if ok.any():  # the correlation's whole pixel, refined
            start = motion.fit_translation(inside[on][ok], moved[ok]).transform @ start
            followed = moved[ok]
        on[on] = ok
    score = zncc(template, frame, start, new, min_share=0.0)  # its share: above
    if score < PART_ZNCC:
        return None
    # carried on from here: the corners of the part in sight, not only the stored ones
    k = 2 * round(POINT_REACH * float(np.sqrt(template.core.sum()))) + 1
    grown = cv2.dilate(new, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    grown &= motion.warp_mask(template.core, start, size) & seen
    more = motion.detect_points(frame.grey, grown, TEMPLATE_POINTS, avoid=followed,
                                min_distance=TEMPLATE_MIN_DISTANCE)
    if len(followed) + len(more) < MIN_PART_POINTS:
        return None
    pts_cur = np.concatenate([followed, more])
    # as much in sight as the track will need to be carried on the next frame
    _, share = part_in_sight(template.grey, template.small, template.core, start, frame.grey,
                             pts_cur, int(template.small.sum()), int(template.core.sum()))
    if share < MIN_IN_SIGHT:
        return None
    pts_key = np.concatenate([template.pts[on], motion.apply(np.linalg.inv(start), more)])
    return Found(start, pts_key.astype(np.float32), pts_cur.astype(np.float32), score, True)


def _strips(template: Template, frame: WorkingFrame, guess: np.ndarray, radius: float
            ) -> list[np.ndarray]:
    """``guess`` moved by the translation that aligns one strip of the stored view's core
    (ENTRY_STRIP of it, on each of its four sides) with the frame within ``radius`` of where
    the guess puts that strip, for each strip that correlates at least PART_ZNCC, best first:
    the part of an object that shows first when it comes out."""
    x, y, w, h = cv2.boundingRect(template.core)
    r = int(min(radius, SEARCH_MAX * max(w, h)))
    placed = [p for box in _strip_boxes(x, y, w, h)
              if (p := _place(template, frame, guess, box, r)) is not None and p[0] >= PART_ZNCC]
    return [g for _, g in sorted(placed, key=lambda o: -o[0])]


def _strip_boxes(x: int, y: int, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """The right, left, bottom and top strips (x0, y0, x1, y1) of a core box, inset by
    SEARCH_INSET across."""
    mx, my = int(SEARCH_INSET * w), int(SEARCH_INSET * h)
    sw, sh = max(8, int(ENTRY_STRIP * w)), max(8, int(ENTRY_STRIP * h))
    return [(max(0, x + w - sw), y + my, x + w, y + h - my),
            (x, y + my, x + sw, y + h - my),
            (x + mx, max(0, y + h - sh), x + w - mx, y + h),
            (x + mx, y, x + w - mx, y + sh)]


def _match(patch: np.ndarray, window: np.ndarray) -> tuple[float, int, int] | None:
    """(best normalised correlation, its x, y in ``window``), None when it does not fit."""
    if (patch.shape[0] < 8 or patch.shape[1] < 8 or window.shape[0] < patch.shape[0]
            or window.shape[1] < patch.shape[1]):
        return None
    _, best, _, (px, py) = cv2.minMaxLoc(cv2.matchTemplate(window, patch, cv2.TM_CCOEFF_NORMED))
    return float(best), int(px), int(py)


def _search(template: Template, frame: WorkingFrame, guess: np.ndarray, radius: float
            ) -> np.ndarray | None:
    """``guess`` moved by the translation that best aligns the template's core box with the
    frame within ``radius`` (normalised cross-correlation, one ``matchTemplate`` over the
    window): a motion prediction is off by tens of pixels after a second hidden, more than
    Lucas-Kanade's reach. None when the window is off the image or nothing correlates."""
    x, y, w, h = cv2.boundingRect(template.core)
    mx, my = int(SEARCH_INSET * w), int(SEARCH_INSET * h)
    placed = _place(template, frame, guess, (x + mx, y + my, x + w - mx, y + h - my),
                    int(min(radius, SEARCH_MAX * max(w, h))))
    return placed[1] if placed is not None and placed[0] >= MIN_ZNCC else None


def _place(template: Template, frame: WorkingFrame, guess: np.ndarray,
           box: tuple[int, int, int, int], r: int) -> tuple[float, np.ndarray] | None:
    """(correlation, ``guess`` moved by the translation) that best aligns ``box`` (x0, y0, x1,
    y1) of the stored view with the frame within ``r`` px of where the guess puts it; None
    when the window is off the image."""
    x0, y0, x1, y1 = box
    tl = motion.apply(guess, np.float32([[x0, y0]]))[0]
    fw, fh = frame.size
    bx0, by0 = max(0, int(tl[0]) - r), max(0, int(tl[1]) - r)
    bx1, by1 = min(fw, int(tl[0]) + r + x1 - x0), min(fh, int(tl[1]) + r + y1 - y0)
    match = _match(template.grey[y0:y1, x0:x1], frame.grey[by0:by1, bx0:bx1])
    if match is None:
        return None
    moved = guess.copy()
    moved[:2, 2] += np.array([bx0 + match[1], by0 + match[2]], np.float64) - tl
    return match[0], moved


def entering(template: Template, frame: WorkingFrame) -> list[np.ndarray]:
    """Where the template's object could be coming into ``frame`` across one of its borders:
    for each side, the strip of the stored core that enters first (the right strip at the left
    border, ...) is correlated with the band along that border; each correlation of at least
    PART_ZNCC gives a guess (template frame -> this frame, a translation), best first. An
    object that left the view on its own may come back anywhere."""
    if template.grey.shape != frame.grey.shape:
        return []
    x, y, w, h = cv2.boundingRect(template.core)
    fw, fh = frame.size
    bw = min(fw, int((ENTRY_STRIP + ENTRY_DEPTH) * w))
    bh = min(fh, int((ENTRY_STRIP + ENTRY_DEPTH) * h))
    bands = [(0, 0, bw, fh), (fw - bw, 0, fw, fh), (0, 0, fw, bh), (0, fh - bh, fw, fh)]
    out = []
    for (sx0, sy0, sx1, sy1), (bx0, by0, bx1, by1) in zip(_strip_boxes(x, y, w, h), bands,
                                                          strict=True):
        match = _match(template.grey[sy0:sy1, sx0:sx1], frame.grey[by0:by1, bx0:bx1])
        if match is not None and match[0] >= PART_ZNCC:
            guess = motion.identity()
            guess[:2, 2] = (bx0 + match[1] - sx0, by0 + match[2] - sy0)
            out.append((match[0], guess))
    return [g for _, g in sorted(out, key=lambda o: -o[0])]


def zncc(template: Template, frame: WorkingFrame, transform: np.ndarray,
         region: np.ndarray | None = None, min_share: float = MIN_IN_VIEW) -> float:
    """Zero-mean normalised cross-correlation of the template's core, moved by ``transform``,
    with ``frame`` (over the part of the moved core inside the frame and ``region``, the part
    its points were found on; 0 when under ``min_share`` of it is)."""
    size = frame.size
    core = motion.warp_mask(template.core, transform, size).astype(bool)
    if region is not None:
        core &= region.astype(bool)
    inside = int(core.sum())
    if inside < min_share * max(1, int(template.core.sum())) or inside < 16:
        return 0.0
    warped = cv2.warpAffine(template.grey, transform[:2], size, flags=cv2.INTER_LINEAR)
    a = warped[core].astype(np.float32)
    b = frame.grey[core].astype(np.float32)
    a -= a.mean()
    b -= b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0
