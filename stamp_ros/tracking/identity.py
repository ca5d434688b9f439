"""Who is who: model masks matched to tracks by mask IoU, and track ids that are never reused.

A new model answer lists its objects in answer order, which says nothing about identity; the
masks do. Each answer's masks are compared with where the current tracks are on the same frame
(mask IoU), and the pairing that maximises the total IoU is taken (Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``), keeping only pairs with IoU >= the minimum. Greedy
matching would let one ambiguous pair steal an object's id from its better partner.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

UINT32_MAX = 2**32 - 1


def iou_matrix(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """(len(a), len(b)) IoU of every pair of same-sized masks (nonzero = foreground); 0 where
    both masks are empty."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    fa = np.stack([np.asarray(m).ravel() != 0 for m in a]).astype(np.float32)
    fb = np.stack([np.asarray(m).ravel() != 0 for m in b]).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float64)


def assign_by_iou(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Rows matched to columns: the assignment of maximal total IoU, pairs below ``min_iou``
    dropped. Returns (row, column) pairs."""
    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)
            if iou[r, c] >= min_iou and iou[r, c] > 0.0]


class TrackIds:
    """Track ids for one node run (or one bag replay): 1, 2, 3, ..., never handed out twice,
    across queries and cameras (0 means "not tracked" in the messages). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            if self._last >= UINT32_MAX:
                raise OverflowError("track ids exhausted (uint32): restart the node")
            self._last += 1
            return self._last

    @property
    def issued(self) -> int:
        """How many ids were handed out so far."""
        with self._lock:
            return self._last
