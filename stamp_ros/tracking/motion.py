"""Sparse motion: forward-backward-checked Lucas-Kanade tracks and a similarity fitted to them.

Why sparse and per object (measured in ``bench/tracking.py``, see /work/shared/docs/
tracking-notes.md): dense optical flow composed frame to frame carries a small bias per frame
that accumulates (IoU 0.76 after 30 frames of a 3 px/frame pan with DIS ultrafast), while a
similarity (rotation, uniform scale, translation) fitted with RANSAC to points that pass a
forward-backward check, and mapping the *model's* mask from its key frame straight to the
current frame, does not drift on rigid motion. Points are tracked frame to frame but keep
their key-frame coordinates, so the fit is key -> current directly and no per-frame error is
compounded.

Transforms are 3x3 float64 matrices acting on pixel coordinates (x, y, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stamp_ros.tracking.image import LK_LEVELS, LK_WINDOW, WorkingFrame

LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
RANSAC_THRESHOLD = 1.5
"""Working pixels: a point further than this from the fitted similarity is an outlier."""
FEATURE_QUALITY = 0.005
FEATURE_MIN_DISTANCE = 4
"""Working pixels between detected corners (small objects still get a handful)."""


def identity() -> np.ndarray:
    return np.eye(3)


def as_3x3(affine_2x3: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2] = affine_2x3
    return out


def scale_of(transform: np.ndarray) -> float:
    """The uniform scale of a similarity (sqrt of the determinant of its linear part)."""
    return float(np.sqrt(abs(np.linalg.det(transform[:2, :2]))))


def apply(transform: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (N, 2) float32 mapped by ``transform``."""
    if len(pts) == 0:
        return pts.reshape(0, 2).astype(np.float32)
    p = pts.reshape(-1, 2).astype(np.float64)
    return (p @ transform[:2, :2].T + transform[:2, 2]).astype(np.float32)


def full_resolution(transform: np.ndarray, frame: WorkingFrame) -> np.ndarray:
    """A working-image transform expressed on full-resolution pixels: S^-1 T S."""
    s = frame.to_working()
    return np.linalg.inv(s) @ transform @ s


def warp_mask(mask: np.ndarray, transform: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` (uint8 0/1) moved by ``transform`` onto an image of ``size`` (w, h), nearest
    neighbour (a mask stays a mask; the model's cell edges stay sharp)."""
    return cv2.warpAffine(mask, transform[:2], size, flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x_min, y_min, x_max, y_max) inclusive of a uint8 mask; (0, 0, -1, -1) when empty."""
    x, y, w, h = cv2.boundingRect(mask)
    return (0, 0, -1, -1) if w == 0 or h == 0 else (x, y, x + w - 1, y + h - 1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two uint8 0/1 masks of one size."""
    inter = int(cv2.countNonZero(cv2.bitwise_and(a, b)))
    union = int(cv2.countNonZero(cv2.bitwise_or(a, b)))
    return inter / union if union else 0.0


def place_mask(mask: np.ndarray, box: tuple[int, int, int, int], transform: np.ndarray,
               size: tuple[int, int]) -> tuple[np.ndarray, int, tuple[int, int, int, int]]:
    """``mask`` (uint8 0/1, its box ``box``) moved by ``transform`` onto a zero image of
    ``size`` (w, h); returns the image, its foreground area and box. Only the region the moved
    box covers is warped (a small object on a 1080p frame costs a fraction of a full warp)."""
    w, h = size
    out = np.zeros((h, w), np.uint8)
    if box[2] < box[0]:
        return out, 0, (0, 0, -1, -1)
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1 + 1, y0], [x0, y1 + 1], [x1 + 1, y1 + 1]], np.float64)
    moved = corners @ transform[:2, :2].T + transform[:2, 2]
    left = max(0, int(np.floor(moved[:, 0].min())) - 1)
    top = max(0, int(np.floor(moved[:, 1].min())) - 1)
    right = min(w, int(np.ceil(moved[:, 0].max())) + 2)
    bottom = min(h, int(np.ceil(moved[:, 1].max())) + 2)
    if right <= left or bottom <= top:
        return out, 0, (0, 0, -1, -1)
    shifted = transform.copy()
    shifted[0, 2] -= left
    shifted[1, 2] -= top
    roi = out[top:bottom, left:right]
    cv2.warpAffine(mask, shifted[:2], (right - left, bottom - top), dst=roi,
                   flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    area = int(cv2.countNonZero(roi))
    if not area:
        return out, 0, (0, 0, -1, -1)
    bx0, by0, bx1, by1 = box_of(roi)
    return out, area, (bx0 + left, by0 + top, bx1 + left, by1 + top)


def detect_points(grey: np.ndarray, region: np.ndarray, max_points: int,
                  avoid: np.ndarray | None = None, min_distance: int = FEATURE_MIN_DISTANCE
                  ) -> np.ndarray:
    """Up to ``max_points`` corners (N, 2) float32 inside ``region`` (uint8, nonzero = allowed),
    at least ``min_distance`` from each other and from the points in ``avoid``."""
    if max_points <= 0 or not region.any():
        return np.empty((0, 2), np.float32)
    allowed = (region != 0).astype(np.uint8) * 255
    if avoid is not None and len(avoid):
        for x, y in np.round(avoid).astype(int):
            cv2.circle(allowed, (int(x), int(y)), min_distance, 0, -1)
    found = cv2.goodFeaturesToTrack(grey, max_points, FEATURE_QUALITY, min_distance,
                                    mask=allowed, blockSize=5)
    if found is None:
        return np.empty((0, 2), np.float32)
    return found.reshape(-1, 2).astype(np.float32)


def track_points(prev: WorkingFrame, cur: WorkingFrame, pts: np.ndarray, fb_threshold: float,
                 guess: np.ndarray | None = None, levels: int = LK_LEVELS
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Lucas-Kanade from ``prev`` to ``cur`` and back. Returns the points in ``cur`` (N, 2) and
    a bool mask of those that are trustworthy: found both ways, back within ``fb_threshold``
    working pixels of where they started, and inside the current image. ``guess`` (N, 2) seeds
    the forward search (a predicted position, for large gaps between the two frames);
    ``levels``: the pyramid's (fewer when the guess is close: on the coarsest levels a small
    object's window is mostly what surrounds it, and the search leaves it)."""
    n = len(pts)
    if n == 0:
        return np.empty((0, 2), np.float32), np.zeros(0, bool)
    p0 = pts.reshape(-1, 1, 2).astype(np.float32)
    flags = 0
    p1_init = None
    if guess is not None:
        p1_init = guess.reshape(-1, 1, 2).astype(np.float32).copy()
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev.grey, cur.grey, p0, p1_init,
                                          winSize=LK_WINDOW, maxLevel=levels,
                                          criteria=LK_CRITERIA, flags=flags)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(cur.grey, prev.grey, p1, p0.copy(),
                                            winSize=LK_WINDOW, maxLevel=levels,
                                            criteria=LK_CRITERIA,
                                            flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    p1 = p1.reshape(-1, 2)
    fb = np.linalg.norm(back.reshape(-1, 2) - p0.reshape(-1, 2), axis=1)
    w, h = cur.size
    inside = (p1[:, 0] >= 0) & (p1[:, 1] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] <= h - 1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_threshold) & inside
    return p1.astype(np.float32), ok


@dataclass
class SimilarityFit:
    transform: np.ndarray
    """3x3: source points -> destination points."""
    inliers: np.ndarray
    """bool (N,): the points the transform explains within RANSAC_THRESHOLD."""

    @property
    def inlier_count(self) -> int:
        return int(self.inliers.sum())


def patch_ncc(a: np.ndarray, pts_a: np.ndarray, b: np.ndarray, pts_b: np.ndarray,
              half: int = 3) -> np.ndarray:
    """Normalised cross-correlation (N,) of the (2 half + 1)-px grey patches around ``pts_a`` in
    ``a`` and ``pts_b`` in ``b`` (-1 where either leaves its image, or is flat)."""
    out = np.full(len(pts_a), -1.0)
    for k, ((xa, ya), (xb, yb)) in enumerate(zip(np.round(pts_a).astype(int),
                                                 np.round(pts_b).astype(int), strict=True)):
        pa = a[ya - half:ya + half + 1, xa - half:xa + half + 1]
        pb = b[yb - half:yb + half + 1, xb - half:xb + half + 1]
        if (min(xa, ya, xb, yb) < half or pa.shape != (2 * half + 1,) * 2
                or pb.shape != pa.shape):
            continue
        pa = pa.astype(np.float64) - pa.mean()
        pb = pb.astype(np.float64) - pb.mean()
        denom = np.sqrt((pa * pa).sum() * (pb * pb).sum())
        if denom > 0:
            out[k] = float((pa * pb).sum() / denom)
    return out


def fit_translation(src: np.ndarray, dst: np.ndarray) -> SimilarityFit | None:
    """The translation src -> dst most points agree on (the median displacement, then the mean
    of those within RANSAC_THRESHOLD of it); None without points. For a partly hidden object:
    its points bunch on the visible side and some stick to the occluder's edge, and a
    similarity fitted to them shrinks the object."""
    if not len(src):
        return None
    d = (dst - src).astype(np.float64)
    inliers = np.linalg.norm(d - np.median(d, axis=0), axis=1) <= RANSAC_THRESHOLD
    out = identity()
    out[:2, 2] = d[inliers].mean(axis=0)
    return SimilarityFit(out, inliers)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> SimilarityFit | None:
    """RANSAC similarity src -> dst (rotation, uniform scale, translation); None when fewer
    than two points or no consensus."""
    if len(src) < 2:
        return None
    m, inliers = cv2.estimateAffinePartial2D(
        src.reshape(-1, 1, 2), dst.reshape(-1, 1, 2), method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_THRESHOLD, maxIters=500, confidence=0.99,
        refineIters=10)
    if m is None or inliers is None:
        return None
    return SimilarityFit(as_3x3(m), inliers.ravel().astype(bool))
