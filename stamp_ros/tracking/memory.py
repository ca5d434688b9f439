"""Re-identification: a model answer's object that matches no live track, against memory.

Remembered tracks (hidden, out of view, missed by the model) keep a small gallery of appearance
descriptors (:mod:`.appearance`) and their filtered motion (:mod:`.kalman`). An unmatched
object takes a remembered track's id when

* it looks alike: the best similarity with the track's gallery is at least ``threshold``;
* it is where the track can be: while a hidden track's position is predicted (``max_prediction``
  s, same scene epoch) the object's centre must lie within a gate around the prediction that
  grows with the time hidden; with 3D on both sides, within a 3D gate likewise. A track that
  left the view, or whose prediction ran out, has no position gate (it may come back anywhere).

Among the admissible pairs the assignment of maximal total score (similarity, less a
penalty for the distance to the prediction, which decides between look-alikes) is taken with
``scipy.optimize.linear_sum_assignment``, as for live tracks (:mod:`.identity`); an object may
also stay unmatched (score 0), so a pair scoring below 0 (alike, but far from where the track
can be) is never taken, and two badly placed pairs never outscore one well-placed pair. A match
whose object looked as alike (within AMBIGUITY_MARGIN) to another admissible track is reported
(``ambiguous_with``): the ids were decided by position, not appearance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

GATE_MIN = 0.12
"""Gate radius at least this share of the image diagonal (plus the object's own size)."""
GATE_GROWTH = 0.1
"""Gate radius growth per second hidden, in image diagonals (a person walks ~0.1-0.3 of a
room-wide view per second)."""
GATE_3D_MIN = 0.3
"""Metres: 3D gate at least this."""
GATE_3D_GROWTH = 1.5
"""Metres per second hidden."""
POSITION_WEIGHT = 1.0
"""Score penalty at the edge of the gate (0 at the predicted position). As large as the whole
similarity range: between look-alikes (similarities within noise of each other, 0.3-0.5 for
partly visible views of the same texture on the benchmark) position must decide."""
AMBIGUITY_MARGIN = 0.1
"""Another admissible track within this similarity of the match: the match is ambiguous."""


@dataclass
class Candidate:
    """A remembered track as the memory sees it for one answer."""

    key: object
    similarities: np.ndarray
    """(answers,) best appearance similarity of each answer object with the track's gallery."""
    predicted: np.ndarray | None
    """Its predicted centre on the answered frame (working px); None: no position gate."""
    radius: float
    """Gate radius (working px) around ``predicted``."""
    predicted_3d: np.ndarray | None = None
    radius_3d: float = 0.0


def reidentify(centres: np.ndarray, positions_3d: Sequence[np.ndarray | None],
               candidates: Sequence[Candidate], threshold: float
               ) -> list[tuple[int, Candidate, float, tuple[object, ...]]]:
    """Answer objects (their centres (N, 2), working px, and 3D positions or None) matched to
    remembered tracks. Returns (answer index, candidate, similarity, keys of the other
    candidates it was ambiguous with)."""
    n, m = len(centres), len(candidates)
    if not n or not m:
        return []
    admissible = np.zeros((n, m), bool)
    score = np.full((n, m), -1.0)
    for j, c in enumerate(candidates):
        for i in range(n):
            sim = float(c.similarities[i])
            if sim < threshold:
                continue
            penalty = 0.0
            if c.predicted is not None:
                d = float(np.linalg.norm(centres[i] - c.predicted))
                if d > c.radius:
                    continue
                penalty = POSITION_WEIGHT * d / max(c.radius, 1e-6)
            p3 = positions_3d[i] if i < len(positions_3d) else None
            if c.predicted_3d is not None and p3 is not None:
                d3 = float(np.linalg.norm(np.asarray(p3) - c.predicted_3d))
                if d3 > c.radius_3d:
                    continue
                penalty += POSITION_WEIGHT * d3 / max(c.radius_3d, 1e-6)
            admissible[i, j] = True
            score[i, j] = sim - penalty
    if not admissible.any():
        return []
    # Each answer object may also stay unmatched (its own column worth 0: it then gets a new id
    # or waits for the next answer). Without that option the assignment must pair as many as
    # it can, and two badly placed matches (look-alikes crossing: each near the *other's*
    # prediction) outscore one well-placed match plus an unmatched object.
    forbidden = -1e6
    unmatched = np.full((n, n), forbidden)
    np.fill_diagonal(unmatched, 0.0)
    value = np.hstack([np.where(admissible, score, forbidden), unmatched])
    rows, cols = linear_sum_assignment(value, maximize=True)
    out = []
    for i, j in zip(rows, cols, strict=True):
        if j >= m or not admissible[i, j] or score[i, j] <= 0.0:
            continue
        sim = float(candidates[j].similarities[i])
        alike = tuple(candidates[k].key for k in range(m) if k != j and admissible[i, k]
                      and float(candidates[k].similarities[i]) >= sim - AMBIGUITY_MARGIN)
        out.append((int(i), candidates[j], sim, alike))
    return out


def gate_radius(diagonal: float, object_size: float, hidden_s: float) -> float:
    """The 2D gate (working px) for a track hidden ``hidden_s`` seconds."""
    return object_size + diagonal * (GATE_MIN + GATE_GROWTH * max(0.0, hidden_s))


def gate_radius_3d(hidden_s: float) -> float:
    return GATE_3D_MIN + GATE_3D_GROWTH * max(0.0, hidden_s)
