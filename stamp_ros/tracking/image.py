"""The image the tracker works on: grey and downscaled.

Motion is estimated on a small grey copy of each frame, downscaled by an integer factor so that
the longer side is at most ``max_side`` pixels: pyramidal Lucas-Kanade costs grow with the
pixel count, and a 1080p frame carries no more trackable structure for a 28-pixel-grid mask
than its 320-pixel copy. The mapping between full-resolution and working pixel coordinates is
kept exact (pixel centres, per axis), so a transform estimated on the working image moves
full-resolution masks correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LK_WINDOW = (15, 15)
"""Lucas-Kanade window (working pixels)."""
LK_LEVELS = 3
"""Pyramid levels above the base: with the window this follows ~50 working px per frame."""


@dataclass
class WorkingFrame:
    """One frame as the tracker sees it."""

    grey: np.ndarray
    """(h, w) uint8, the downscaled grey image."""
    full_size: tuple[int, int]
    """(W, H) of the original frame: masks are produced at this size."""
    colour: np.ndarray | None = None
    """(h, w, 3) uint8 RGB at the working size, kept only where asked (``working_frame(...,
    colour=True)``: the frames of model answers, which the appearance descriptor reads)."""

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of the working image."""
        return int(self.grey.shape[1]), int(self.grey.shape[0])

    @property
    def scale(self) -> tuple[float, float]:
        """Working pixels per full-resolution pixel, per axis."""
        return self.size[0] / self.full_size[0], self.size[1] / self.full_size[1]

    def to_working(self) -> np.ndarray:
        """3x3 matrix mapping full-resolution pixel coordinates to working ones (the pixel
        centres of an INTER_AREA resize: x_w = (x + 0.5) * s - 0.5)."""
        sx, sy = self.scale
        return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def working_factor(size: tuple[int, int], max_side: int) -> int:
    """The integer downscale factor that brings the longer side of ``size`` to at most
    ``max_side`` (integer factors take OpenCV's fast area-averaging path: 0.02 ms for 640x480
    -> 320x240 against 1.5 ms for 640x480 -> 480x360)."""
    return max(1, -(-max(size) // max(1, int(max_side))))


def working_frame(image: np.ndarray, max_side: int, colour: bool = False) -> WorkingFrame:
    """The working frame of an (H, W, 3) RGB or (H, W) grey uint8 image (with its colour copy
    at the working size when ``colour`` and the image has colour)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 image, got {img.dtype} "
                         f"{img.shape}")
    h, w = img.shape[:2]
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    factor = working_factor((w, h), max_side)
    rgb = img if colour and img.ndim == 3 else None
    if factor > 1:
        size = (max(1, w // factor), max(1, h // factor))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        if rgb is not None:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return WorkingFrame(np.ascontiguousarray(grey), (w, h),
                        None if rgb is None else np.ascontiguousarray(rgb))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A full-resolution mask (nonzero = foreground) at ``size`` (w, h) as uint8 0/1: a working
    pixel is foreground when at least half of what it covers is."""
    m = (np.asarray(mask) != 0).view(np.uint8)
    if (m.shape[1], m.shape[0]) == tuple(size):
        return m
    return (cv2.resize(m * np.uint8(255), size, interpolation=cv2.INTER_AREA) >= 128).view(
        np.uint8)
