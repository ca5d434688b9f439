"""Coarse STAMP grids/logits -> full-resolution masks, and small mask statistics.

Part of the engine: the segmenter calls these once per result, so the CLI and the ROS node get
masks, boxes, areas and scores already computed the same way (the node never recomputes them).
Functions accept numpy arrays and, where it pays off (upsampling on the model's device), torch
tensors; they return the same kind they were given. The union of a result's masks, which only
the front ends draw or publish, is :func:`stamp_ros.render.overlay.union_mask` (numpy, no torch).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

UPSAMPLE_MODES = ("nearest", "bilinear")


def nearest_source_index(in_size: int, out_size: int) -> np.ndarray:
    """Source index per output index, identical to the reference's upsampling.

    The reference runs ``F.interpolate(grid.double(), size, mode='nearest')`` (legacy nearest,
    ``src = floor(dst * in / out)``). PyTorch evaluates that product in limited precision, so at
    exact integer boundaries the result can differ from the rational formula, and it differs
    between float32 and float64 inputs. Rather than re-deriving the kernel's rounding, interpolate
    an index ramp with the very same call; that is exact for any torch version and costs O(out).
    """
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"sizes must be positive, got in={in_size} out={out_size}")
    ramp = torch.arange(in_size, dtype=torch.float64).view(1, 1, in_size, 1)
    src = torch.nn.functional.interpolate(ramp, size=(out_size, 1), mode="nearest")
    return src.view(out_size).long().numpy()


def upsample_nearest(grid: ArrayT, size_hw: tuple[int, int]) -> ArrayT:
    """Stretch a (..., h, w) grid to (..., H, W) like torch legacy nearest (no resampling maths).

    Works for numpy arrays and for torch tensors on any device (pure index gathering), so the
    engine can upsample on the GPU and copy the finished masks back once.
    """
    h, w = grid.shape[-2:]
    rows = nearest_source_index(h, size_hw[0])
    cols = nearest_source_index(w, size_hw[1])
    if isinstance(grid, torch.Tensor):
        r = torch.from_numpy(rows).to(grid.device)
        c = torch.from_numpy(cols).to(grid.device)
        return grid.index_select(-2, r).index_select(-1, c)
    return grid[..., rows, :][..., cols]


def upsample_bilinear(logits: ArrayT, size_hw: tuple[int, int]) -> ArrayT:
    """Bilinear (align_corners=False) upsampling of (..., h, w) logits, float32.

    Interpolating logits instead of 0/1 labels gives smooth, sub-cell boundaries; thresholding the
    result at 0 is the optional ``mask_upsample='bilinear'`` mode.
    """
    is_np = isinstance(logits, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(logits)) if is_np else logits
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:]).float()
    out = torch.nn.functional.interpolate(
        t, size=tuple(size_hw), mode="bilinear", align_corners=False
    )
    out = out.reshape(*lead, *size_hw)
    return out.numpy() if is_np else out


def logits_to_mask(logits: ArrayT, size_hw: tuple[int, int], mode: str = "nearest") -> ArrayT:
    """(..., h, w) classifier logits -> (..., H, W) uint8 {0,1} mask in the chosen mode.

    ``nearest`` thresholds first and stretches the 0/1 grid (the reference behaviour);
    ``bilinear`` interpolates the logits and thresholds afterwards.
    """
    if mode == "nearest":
        grid = logits > 0
        grid = grid.to(torch.uint8) if isinstance(grid, torch.Tensor) else grid.astype(np.uint8)
        return upsample_nearest(grid, size_hw)
    if mode == "bilinear":
        up = upsample_bilinear(logits, size_hw) > 0
        return up.to(torch.uint8) if isinstance(up, torch.Tensor) else up.astype(np.uint8)
    raise ValueError(f"unknown upsample mode {mode!r}; expected one of {UPSAMPLE_MODES}")


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (x_min, y_min, x_max, y_max) of the foreground; (0, 0, -1, -1) if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, -1, -1)
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


def mask_area(mask: np.ndarray) -> int:
    """Foreground pixel count (any non-zero value counts)."""
    return int(np.count_nonzero(mask))


def grid_score(logits: np.ndarray, grid: np.ndarray | None = None) -> float:
    """Mean sigmoid probability over the foreground cells; 0.0 when there are none.

    Averaging only the foreground cells makes the score answer "how sure is the model about
    what it marked", independent of how large the object is.
    """
    logits = np.asarray(logits, dtype=np.float64)
    fg = (logits > 0) if grid is None else np.asarray(grid).astype(bool)
    if not fg.any():
        return 0.0
    return float(np.mean(1.0 / (1.0 + np.exp(-logits[fg]))))

