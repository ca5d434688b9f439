"""What an object looks like: a descriptor to recognise a remembered track by.

A model answer's object that matches no live track is compared with the tracks in memory
(:mod:`.memory`) before it gets a new id; appearance is one half of that comparison (position
and motion the other). The descriptor is pluggable: :class:`Appearance` is the interface (a
descriptor from a working frame and a mask, a similarity in [0, 1]), :class:`ClassicAppearance`
the default, which works with any model weights (the model's own pooled vision features would
be another implementation, meaningful only with trained weights).

ClassicAppearance = an HSV colour histogram over the mask (hue x saturation, robust to the
small pose changes a hidden object goes through, blind to layout) and ORB keypoints matched
with a ratio test and verified by one RANSAC similarity (layout-aware, tells two same-coloured
objects apart when they are textured); :meth:`ClassicAppearance.verified` is the stricter
count (one to one, plausible scale) that stands for identity without a position. The
similarity is their weighted mean (HIST_WEIGHT): the histogram carries weakly textured
objects, the verified keypoints textured ones whose colours are common. Measured on the
benchmark's objects: docs/tracking.md, "Object permanence".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from stamp_ros.tracking.image import WorkingFrame

HIST_BINS = (16, 4)
"""Hue x saturation bins (value left out: it follows the lighting)."""
HIST_WEIGHT = 0.6
"""Weight of the histogram in the similarity (the keypoints' is the rest)."""
ORB_FEATURES = 150
ORB_RATIO = 0.75
"""Lowe's ratio test on Hamming distances."""
ORB_FULL_MATCH = 20
"""Geometrically verified matches that count as a certain match (similarity 1)."""
ORB_SCALE_RANGE = (0.2, 5.0)
"""The verifying similarity's scale must lie in this range: RANSAC otherwise "verifies" many
keypoints of one image matched to one keypoint of the other with a scale of ~0 (blob corners
of different textures from one generator reached a "certain" match that way)."""
VERIFIED_MATCHES = 8
"""Geometrically verified one-to-one matches that are positive evidence of the same object
(:meth:`ClassicAppearance.verified`): different textures from one generator reach 3-5."""
ERODE = 0.25
"""The mask is eroded by this share of its box's smaller side before describing."""
UPSCALE_BELOW = 96
"""An object whose box is smaller than this (working px) is described at 2x: ORB needs ~31 px
patches, and a small object on the working image has few."""


class Appearance(Protocol):
    """A descriptor kind. ``describe`` may return None (nothing to describe)."""

    name: str

    def describe(self, frame: WorkingFrame, mask: np.ndarray) -> Any | None:
        """The descriptor of the object under ``mask`` (working size, uint8 0/1)."""

    def similarity(self, a: Any, b: Any) -> float:
        """How alike two descriptors are, 0 (unrelated) to 1 (the same)."""

    def verified(self, a: Any, b: Any) -> bool:
        """Positive geometric evidence that ``a`` and ``b`` show the same object (its own
        layout of features, not just its colours). Without a position gate it is required
        before an id is given back (:mod:`.permanence`); a descriptor kind without geometry
        returns False, and then only position-gated re-identification happens."""


@dataclass
class ClassicDescriptor:
    hist: np.ndarray
    """Normalised hue x saturation histogram (float32), or a grey histogram without colour."""
    keypoints: np.ndarray
    """(N, 2) float32 positions (descriptor image pixels)."""
    orb: np.ndarray | None
    """(N, 32) uint8 ORB descriptors."""


class ClassicAppearance:
    """Colour histogram + geometrically verified ORB keypoints (see the module docstring)."""

    name = "hsv-histogram+orb"

    def __init__(self, use_histogram: bool = True, use_keypoints: bool = True) -> None:
        self.use_histogram = use_histogram
        self.use_keypoints = use_keypoints
        self._orb = cv2.ORB_create(ORB_FEATURES, scaleFactor=1.2, nlevels=4, edgeThreshold=15,
                                   patchSize=15)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def describe(self, frame: WorkingFrame, mask: np.ndarray) -> ClassicDescriptor | None:
        m = (np.asarray(mask) != 0).astype(np.uint8)
        x, y, w, h = cv2.boundingRect(m)
        if w < 4 or h < 4:
            return None
        # The model's cells overhang the object: its rim is as much background as object (and
        # two objects in front of the same background would look alike there). Describe the
        # core only.
        k = max(3, int(ERODE * min(w, h)) | 1)
        core = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        if cv2.countNonZero(core) >= 16:
            m = core
            x, y, w, h = cv2.boundingRect(m)
        if frame.colour is not None:
            hsv = cv2.cvtColor(frame.colour[y:y + h, x:x + w], cv2.COLOR_RGB2HSV)
            hist = cv2.calcHist([hsv], [0, 1], m[y:y + h, x:x + w], list(HIST_BINS),
                                [0, 180, 0, 256])
        else:
            hist = cv2.calcHist([frame.grey[y:y + h, x:x + w]], [0], m[y:y + h, x:x + w], [32],
                                [0, 256])
        hist = cv2.normalize(hist, None, 1.0, 0.0, cv2.NORM_L1).astype(np.float32)
        pts, orb = np.empty((0, 2), np.float32), None
        if self.use_keypoints:
            pad = 8
            x0, y0 = max(0, x - pad), max(0, y - pad)
            grey = frame.grey[y0:y + h + pad, x0:x + w + pad]
            region = m[y0:y + h + pad, x0:x + w + pad] * 255
            if max(w, h) < UPSCALE_BELOW:
                grey = cv2.resize(grey, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
                region = cv2.resize(region, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
            kps, orb = self._orb.detectAndCompute(grey, region)
            if orb is not None and len(kps):
                pts = np.float32([k.pt for k in kps])
        return ClassicDescriptor(hist, pts, orb)

    def similarity(self, a: ClassicDescriptor, b: ClassicDescriptor) -> float:
        hist = 0.0
        if a.hist.shape == b.hist.shape:
            hist = 1.0 - float(cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA))
        if not self.use_keypoints:
            return hist
        keypoints = self.keypoint_similarity(a, b)
        if not self.use_histogram:
            return keypoints
        return HIST_WEIGHT * hist + (1.0 - HIST_WEIGHT) * keypoints

    def keypoint_similarity(self, a: ClassicDescriptor, b: ClassicDescriptor) -> float:
        """Share of a full match (ORB_FULL_MATCH) found among ratio-tested matches that one
        RANSAC similarity explains. Not one to one and of any scale (a fit of scale ~0 counts
        every keypoint matched to one point): see :meth:`verified_count` and the limits in
        docs/tracking.md; the gated scores of the benchmark were tuned with it."""
        _, inliers = self._fit(a, b, self._ratio_matches(a, b))
        count = 0 if inliers is None else int(inliers.sum())
        return min(1.0, count / ORB_FULL_MATCH)

    def _ratio_matches(self, a: ClassicDescriptor, b: ClassicDescriptor) -> list:
        """Nearest-neighbour ORB matches that pass the ratio test (empty without keypoints)."""
        if a.orb is None or b.orb is None or len(a.orb) < 3 or len(b.orb) < 3:
            return []
        pairs = self._matcher.knnMatch(a.orb, b.orb, k=2)
        return [p[0] for p in pairs if len(p) == 2 and p[0].distance < ORB_RATIO * p[1].distance]

    @staticmethod
    def _fit(a: ClassicDescriptor, b: ClassicDescriptor, good: list) -> tuple:
        """One RANSAC similarity over the matches: (2x3 fit or None, inlier flags or None)."""
        if len(good) < 3:
            return None, None
        src = a.keypoints[[g.queryIdx for g in good]].reshape(-1, 1, 2)
        dst = b.keypoints[[g.trainIdx for g in good]].reshape(-1, 1, 2)
        return cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                           ransacReprojThreshold=3.0, maxIters=200)

    def verified(self, a: ClassicDescriptor, b: ClassicDescriptor) -> bool:
        return self.verified_count(a, b) >= VERIFIED_MATCHES

    def verified_count(self, a: ClassicDescriptor, b: ClassicDescriptor) -> int:
        """One-to-one ratio-tested keypoint matches explained by one RANSAC similarity."""
        best: dict[int, cv2.DMatch] = {}
        for m in self._ratio_matches(a, b):
            kept = best.get(m.trainIdx)
            if kept is None or m.distance < kept.distance:
                best[m.trainIdx] = m
        fit, inliers = self._fit(a, b, list(best.values()))
        if fit is None or inliers is None:
            return 0
        scale = float(np.hypot(fit[0, 0], fit[1, 0]))
        if not ORB_SCALE_RANGE[0] <= scale <= ORB_SCALE_RANGE[1]:
            return 0
        return int(inliers.sum())
