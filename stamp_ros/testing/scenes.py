"""Synthetic moving scenes with exact ground truth, for the tracker's tests and benchmark.

A scene is a textured background and (optionally) a textured object, both moved by known
amounts per frame: :class:`PanScene` moves a window over a large canvas (a camera pan: the whole
image moves), :class:`ObjectScene` moves an object over a still background. Every frame comes
with the object's true mask; :func:`model_like_mask` turns a true mask into what STAMP gives (a
mask made of 28-pixel grid cells, optionally shifted by up to a cell: answer-to-answer jitter).
:class:`LayeredScene` composes several moving objects, static occluders in front of them and a
camera path over a canvas (a real photo or a texture), with every object's *visible* mask: the
object-permanence sequences (occlusion, leaving the view, look-alikes crossing, look-away).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = ["LayeredScene", "ObjectScene", "Occluder", "PanScene", "Sprite", "model_answer",
           "model_like_mask", "photo", "texture"]

CELL = 28
"""STAMP's merged patch: masks are unions of CELL x CELL cells."""


def texture(h: int, w: int, seed: int, contrast: float = 1.0) -> np.ndarray:
    """(h, w, 3) uint8 texture with corners at every scale: random blobs, edges and noise (what
    a cluttered room gives a corner detector)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.float32)
    for _ in range(max(40, h * w // 1500)):
        color = rng.uniform(0, 255, 3).tolist()
        x, y = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        size = int(rng.uniform(4, 40))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + size, y + int(rng.uniform(4, 40))), color, -1)
        else:
            cv2.circle(img, (x, y), size // 2, color, -1)
    img += rng.normal(0, 10, (h, w, 3))
    img = cv2.GaussianBlur(img, (3, 3), 0)
    img = 128 + (img - 128) * contrast
    return np.clip(img, 0, 255).astype(np.uint8)


def model_like_mask(true_mask: np.ndarray, shift: tuple[int, int] = (0, 0),
                    cell: int = CELL) -> np.ndarray:
    """The (H, W) uint8 0/1 mask a grid model gives for ``true_mask``: every cell at least half
    covered is foreground; ``shift`` (dx, dy) pixels moves the result (answer jitter)."""
    h, w = true_mask.shape
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.zeros((gh * cell, gw * cell), np.float32)
    padded[:h, :w] = true_mask != 0
    cover = padded.reshape(gh, cell, gw, cell).mean(axis=(1, 3))
    grid = (cover >= 0.5).astype(np.uint8)
    out = np.kron(grid, np.ones((cell, cell), np.uint8))[:h, :w]
    if shift != (0, 0):
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        out = cv2.warpAffine(out, m, (w, h), flags=cv2.INTER_NEAREST)
    return out


def model_answer(visible: list[np.ndarray], full: list[np.ndarray], wholes: list[float],
                 rng: np.random.Generator, sees: float = 0.2, jitter: int = 10
                 ) -> list[np.ndarray]:
    """What a simulated model answers for one frame, in object order: a :func:`model_like_mask`
    of each object's ``visible`` mask, shifted by up to ``jitter`` px (one ``rng`` draw per
    answered object), for every object inside the image (``full``: its mask clipped to it)
    of which at least ``sees`` of ``wholes`` (its area: all of it, or the part inside the
    image) is visible; masks the grid empties are left out."""
    out = []
    for v, f, whole in zip(visible, full, wholes, strict=True):
        if f.sum() and v.sum() >= sees * whole:
            m = model_like_mask(v, shift=tuple(int(d) for d in
                                               rng.integers(-jitter, jitter + 1, 2)))
            if m.any():
                out.append(m)
    return out


class PanScene:
    """A camera panning over a large textured canvas by ``velocity`` (dx, dy) px per frame; the
    tracked object is a region of the canvas (it moves by -velocity in the image)."""

    def __init__(self, size: tuple[int, int] = (640, 480), velocity: tuple[float, float] =
                 (3.0, 0.0), frames: int = 30, seed: int = 0,
                 object_box: tuple[int, int, int, int] = (220, 150, 180, 150)) -> None:
        self.w, self.h = size
        self.vx, self.vy = velocity
        margin_x = int(abs(self.vx) * frames) + 8
        margin_y = int(abs(self.vy) * frames) + 8
        self.canvas = texture(self.h + 2 * margin_y, self.w + 2 * margin_x, seed)
        self.origin = (margin_x, margin_y)
        x, y, bw, bh = object_box
        self.object = np.zeros(self.canvas.shape[:2], np.uint8)
        cv2.ellipse(self.object, (self.origin[0] + x + bw // 2, self.origin[1] + y + bh // 2),
                    (bw // 2, bh // 2), 0, 0, 360, 1, -1)

    def _warp(self, img: np.ndarray, dx: float, dy: float, interp: int) -> np.ndarray:
        m = np.float32([[1, 0, -(self.origin[0] + dx)], [0, 1, -(self.origin[1] + dy)]])
        return cv2.warpAffine(img, m, (self.w, self.h), flags=interp)

    def frame(self, i: int) -> np.ndarray:
        return self.view(self.vx * i, self.vy * i)

    def mask(self, i: int) -> np.ndarray:
        return self._warp(self.object, self.vx * i, self.vy * i, cv2.INTER_NEAREST)

    def view(self, dx: float, dy: float = 0.0) -> np.ndarray:
        """The window moved by (dx, dy) from the start (within the canvas margin)."""
        return self._warp(self.canvas, dx, dy, cv2.INTER_LINEAR)


class ObjectScene:
    """A textured object (ellipse) moving by ``velocity`` px per frame over a still textured
    background, from ``start`` (its top-left corner)."""

    def __init__(self, size: tuple[int, int] = (640, 480), velocity: tuple[float, float] =
                 (3.0, 0.0), start: tuple[float, float] = (160, 160),
                 object_size: tuple[int, int] = (160, 130), seed: int = 0) -> None:
        self.w, self.h = size
        self.velocity = velocity
        self.start = start
        self.background = texture(self.h, self.w, seed)
        ow, oh = object_size
        self.appearance = texture(oh, ow, seed + 1000, contrast=1.3)
        self.shape = np.zeros((oh, ow), np.uint8)
        cv2.ellipse(self.shape, (ow // 2, oh // 2), (ow // 2, oh // 2), 0, 0, 360, 1, -1)

    def _place(self, i: int, img: np.ndarray, interp: int) -> np.ndarray:
        x = self.start[0] + self.velocity[0] * i
        y = self.start[1] + self.velocity[1] * i
        m = np.float32([[1, 0, x], [0, 1, y]])
        return cv2.warpAffine(img, m, (self.w, self.h), flags=interp,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def mask(self, i: int) -> np.ndarray:
        return self._place(i, self.shape, cv2.INTER_NEAREST)

    def frame(self, i: int) -> np.ndarray:
        obj = self._place(i, self.appearance, cv2.INTER_LINEAR)
        inside = self.mask(i).astype(bool)
        out = self.background.copy()
        out[inside] = obj[inside]
        return out


def photo(path: str | Path, min_size: tuple[int, int], seed: int = 3) -> np.ndarray:
    """The RGB photo at ``path`` (e.g. /work/shared/data/horses.jpg), or a synthetic texture of
    ``min_size`` (w, h) where it is missing (so a scene builds on any machine)."""
    img = cv2.imread(str(path)) if Path(path).is_file() else None
    if img is None or img.shape[1] < min_size[0] or img.shape[0] < min_size[1]:
        return texture(min_size[1], min_size[0], seed)
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


Path2D = Callable[[int], tuple[float, float] | None]
"""Frame index -> top-left corner (canvas pixels) of a sprite or the camera; None: the sprite is
not in the world on that frame (it went round the back)."""


@dataclass
class Sprite:
    """A textured ellipse moving over the canvas along ``path``."""

    appearance: np.ndarray
    """(h, w, 3) uint8."""
    path: Path2D
    shape: np.ndarray = field(default=None, repr=False)
    """(h, w) uint8 0/1; an ellipse filling the appearance by default."""

    def __post_init__(self) -> None:
        if self.shape is None:
            h, w = self.appearance.shape[:2]
            self.shape = np.zeros((h, w), np.uint8)
            cv2.ellipse(self.shape, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)

    @classmethod
    def textured(cls, size: tuple[int, int], seed: int, path: Path2D) -> Sprite:
        """An object of ``size`` (w, h) with the texture of ``seed`` (same seed: look-alikes)."""
        return cls(texture(size[1], size[0], seed, contrast=1.3), path)


@dataclass
class Occluder:
    """A static textured rectangle (canvas pixels) in front of every sprite: a pillar, a wall."""

    box: tuple[int, int, int, int]
    """(x, y, w, h)."""
    seed: int = 77
    frames: range | None = None
    """The frames it is there on (a hand or a passer-by that appears at once); None: always."""

    def __post_init__(self) -> None:
        self.appearance = texture(self.box[3], self.box[2], self.seed, contrast=0.8)


class LayeredScene:
    """Sprites over a canvas, occluders over the sprites, seen through a ``size`` window that
    moves along ``camera`` (the window's top-left in canvas pixels; still when None).
    :meth:`masks` are what is *visible* of each sprite, :meth:`full_masks` the whole sprite
    (amodal) clipped to the window."""

    def __init__(self, canvas: np.ndarray, sprites: list[Sprite], occluders: list[Occluder] = (),
                 size: tuple[int, int] = (640, 480), camera: Path2D | None = None) -> None:
        self.canvas = canvas
        self.sprites = list(sprites)
        self.occluders = list(occluders)
        self.w, self.h = size
        self.camera = camera or (lambda i: (0.0, 0.0))

    def _at(self, img: np.ndarray, xy: tuple[float, float], i: int, interp: int) -> np.ndarray:
        cx, cy = self.camera(i)
        m = np.float32([[1, 0, xy[0] - cx], [0, 1, xy[1] - cy]])
        return cv2.warpAffine(img, m, (self.w, self.h), flags=interp,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def _occluded(self, i: int) -> np.ndarray:
        out = np.zeros((self.h, self.w), np.uint8)
        for o in self.occluders:
            if o.frames is not None and i not in o.frames:
                continue
            out |= self._at(np.ones(o.appearance.shape[:2], np.uint8), o.box[:2], i,
                            cv2.INTER_NEAREST)
        return out

    def full_masks(self, i: int) -> list[np.ndarray]:
        """(H, W) uint8 0/1 per sprite: where it is on frame ``i``, hidden or not."""
        empty = np.zeros((self.h, self.w), np.uint8)
        return [empty if (xy := s.path(i)) is None else
                self._at(s.shape, xy, i, cv2.INTER_NEAREST) for s in self.sprites]

    def masks(self, i: int) -> list[np.ndarray]:
        """(H, W) uint8 0/1 per sprite: its visible part on frame ``i`` (the ground truth)."""
        hidden = self._occluded(i)
        return [m & (1 - hidden) for m in self.full_masks(i)]

    def frame(self, i: int) -> np.ndarray:
        out = self._at(self.canvas, (0.0, 0.0), i, cv2.INTER_LINEAR)
        for s in self.sprites:
            xy = s.path(i)
            if xy is None:
                continue
            shape = self._at(s.shape, xy, i, cv2.INTER_NEAREST).astype(bool)
            out[shape] = self._at(s.appearance, xy, i, cv2.INTER_LINEAR)[shape]
        for o in self.occluders:
            if o.frames is not None and i not in o.frames:
                continue
            inside = self._at(np.ones(o.appearance.shape[:2], np.uint8), o.box[:2], i,
                              cv2.INTER_NEAREST).astype(bool)
            out[inside] = self._at(o.appearance, o.box[:2], i, cv2.INTER_LINEAR)[inside]
        return out
