"""The official referring-segmentation metrics (cIoU, gIoU) and the extras ``stamp-ros eval`` adds.

Per sample the protocol counts two classes (0 background, 1 object) with ``ignore_index`` 255,
the way ``intersectionAndUnionGPU`` does with ``torch.histc``; only class 1 is reported:

* ``I = |pred == 1 and truth == 1|``, ``U = |pred == 1| + |truth == 1| - I``. A ground-truth
  pixel of any other value (2 where two polygons of one RefCOCO annotation overlap) is in
  neither count, while a predicted 1 on it still counts in ``U``. Truth 255 is ignored: such
  pixels leave the prediction's count too.
* cIoU (cumulative IoU) ``= sum(I) / (sum(U) + 1e-5)`` over a split.
* gIoU ``= mean(I / (U + 1e-5))`` over the samples, where a sample with ``U == 0`` (empty
  prediction on an empty ground truth) scores 1.0.

The sums are kept as Python integers (exact, order-free) and the division is done once at the
end, in float64: the official script accumulates in float32 on the GPU, so its numbers can differ
from these in the 7th significant digit; on the same masks they agree to that precision.

Extras, always reported apart from the protocol numbers: the no-target / target accuracy of
gRefCOCO-style data (does the first mask stay empty exactly when the ground truth is empty?),
and per-stage latency percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EPS",
    "IGNORE_INDEX",
    "Score",
    "SplitScore",
    "intersection_union",
    "percentiles",
    "sample_iou",
    "score",
]

EPS = 1e-5
"""The protocol's smoothing term in both divisions."""
IGNORE_INDEX = 255


def intersection_union(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(I, U) of class 1 for one sample, by the protocol's rule (see the module docstring).

    ``pred``: (H, W) {0, 1} prediction; ``truth``: (H, W) ground truth of small non-negative
    integers (1 object, 0 background, 2+ overlap, 255 ignore).
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in size")
    p1 = pred == 1
    t1 = truth == 1
    ignored = truth == IGNORE_INDEX
    if ignored.any():
        p1 &= ~ignored
    inter = int(np.count_nonzero(p1 & t1))
    union = int(np.count_nonzero(p1)) + int(np.count_nonzero(t1)) - inter
    return inter, union


def sample_iou(inter: int, union: int) -> float:
    """One sample's IoU as gIoU averages it: ``I / (U + 1e-5)``, 1.0 when ``U == 0``."""
    return 1.0 if union == 0 else inter / (union + EPS)


@dataclass(frozen=True)
class Score:
    """One mask variant on one sample: its counts, and whether prediction and truth are empty."""

    inter: int
    union: int
    pred_empty: bool
    truth_empty: bool

    @property
    def iou(self) -> float:
        return sample_iou(self.inter, self.union)

    def as_dict(self) -> dict:
        return {"i": self.inter, "u": self.union, "iou": self.iou, "pred_empty": self.pred_empty}

    @classmethod
    def from_dict(cls, d: Mapping, truth_empty: bool) -> Score:
        return cls(int(d["i"]), int(d["u"]), bool(d["pred_empty"]), truth_empty)


def score(pred: np.ndarray, truth: np.ndarray) -> Score:
    inter, union = intersection_union(pred, truth)
    return Score(inter, union, not bool(np.any(pred == 1)), not bool(np.any(truth > 0)))


class SplitScore:
    """Sums of one mask variant over a split: cIoU, gIoU and the no-target extras.

    Samples are added in any order; the integer sums are exact, and :meth:`result` sums the
    per-sample IoUs with ``math.fsum`` so the gIoU does not depend on the order either (a
    sharded run and a single process give the same bits).
    """

    def __init__(self) -> None:
        self.inter = 0
        self.union = 0
        self.ious: list[float] = []
        self.no_target = 0
        self.no_target_hit = 0
        self.target = 0
        self.target_hit = 0

    def add(self, s: Score) -> None:
        self.inter += s.inter
        self.union += s.union
        self.ious.append(s.iou)
        if s.truth_empty:
            self.no_target += 1
            self.no_target_hit += s.pred_empty
        else:
            self.target += 1
            self.target_hit += not s.pred_empty

    @property
    def count(self) -> int:
        return len(self.ious)

    @property
    def ciou(self) -> float | None:
        return self.inter / (self.union + EPS) if self.count else None

    @property
    def giou(self) -> float | None:
        return math.fsum(self.ious) / self.count if self.count else None

    def result(self) -> dict:
        """The protocol numbers (fractions in [0, 1]) and the sums they come from."""
        return {
            "ciou": self.ciou,
            "giou": self.giou,
            "samples": self.count,
            "intersection": self.inter,
            "union": self.union,
        }

    def target_result(self) -> dict:
        """Extra: N-acc (empty first mask on an empty truth) and T-acc (non-empty on non-empty)."""
        return {
            "no_target_samples": self.no_target,
            "no_target_accuracy": self.no_target_hit / self.no_target if self.no_target else None,
            "target_samples": self.target,
            "target_accuracy": self.target_hit / self.target if self.target else None,
        }


def percentiles(values: Iterable[float], qs: tuple[int, ...] = (50, 90)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "mean": ...}`` of ``values`` (empty dict for no values)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {}
    out = {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in qs}
    out["mean"] = round(float(arr.mean()), 3)
    return out
