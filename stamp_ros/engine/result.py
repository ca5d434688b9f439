"""Plain data returned by the engine: numpy arrays and Python scalars, no torch tensors.

Keeping results free of torch means the ROS layer and the CLI can serialise them without
knowing which device the model ran on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SegInstance:
    """One mask, produced by one ``<|seg|>`` token of the answer (in answer order)."""

    grid: np.ndarray
    """(grid_h, grid_w) uint8 in {0, 1}: the model's per-merged-patch decision (logit > 0)."""
    logits: np.ndarray
    """(grid_h, grid_w) float32 classifier logits, row-major like ``grid``."""
    mask: np.ndarray
    """(H, W) uint8 in {0, 1}: full-resolution mask at the source image size."""
    bbox: tuple[int, int, int, int]
    """(x_min, y_min, x_max, y_max) in pixels, inclusive; (0, 0, -1, -1) when the mask is empty."""
    area: int
    """Foreground pixel count of ``mask``."""
    score: float
    """Mean foreground probability, sigmoid(logit) averaged over foreground cells (0.0 if none)."""


@dataclass
class StampResult:
    text: str
    """The answer with special tokens stripped."""
    instances: list[SegInstance]
    image_size: tuple[int, int]
    """(width, height) of the source image."""
    grid_size: tuple[int, int]
    """(grid_h, grid_w) of the merged-patch grid that the mask tokens cover."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Stage -> milliseconds: preprocess, generate, mask, postprocess, total (and finer ones)."""
    token_ids: list[int] = field(default_factory=list)
    """The generated token ids, special tokens included (for teacher forcing and debugging)."""
