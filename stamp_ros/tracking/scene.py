"""The whole image's motion: camera movement between frames, and scene changes.

Points spread over the whole frame are tracked every frame along with the objects' own points.
Two things come out of them:

* a *scene change*: when most of them fail the forward-backward check at once (a cut, the camera
  covered, a jump the flow cannot follow), nothing tracked before can be trusted; every track is
  marked lost and a fresh model answer is asked for;
* the *camera motion* (a similarity per frame, accumulated): a model answer arrives for a frame
  some time in the past, and the motion since then is where the search for a new object's
  points starts in the current frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from stamp_ros.tracking import motion
from stamp_ros.tracking.image import WorkingFrame

SCENE_POINTS = 64
"""Points kept over the whole image; topped up when fewer than half survive."""
MIN_SCENE_POINTS = 20
"""Fewer tracked points than this (a blank wall) say nothing about a scene change."""
HISTORY = 512
"""Frames whose accumulated camera motion is kept (17 s at 30 Hz): how old a model answer may
be and still be carried to the current frame by camera motion."""


@dataclass
class SceneStep:
    changed: bool
    failed_fraction: float
    tracked: int


class SceneMotion:
    """Background points of one tracked stream and the camera motion they give."""

    def __init__(self) -> None:
        self.pts = np.empty((0, 2), np.float32)
        self.epoch = 0
        """Bumped at every scene change: motion across epochs is unknown."""
        self.last_change_seq = -1
        self._acc = motion.identity()
        self._history: deque[tuple[int, int, np.ndarray]] = deque(maxlen=HISTORY)

    def start(self, frame: WorkingFrame, seq: int) -> None:
        """Begin on ``frame`` (the first frame, or the first after a scene change)."""
        self.pts = motion.detect_points(frame.grey, np.ones_like(frame.grey), SCENE_POINTS)
        self._acc = motion.identity()
        self._history.append((seq, self.epoch, self._acc.copy()))

    def update(self, cur: WorkingFrame, seq: int, new_pts: np.ndarray, ok: np.ndarray,
               scene_change: float) -> SceneStep:
        """Account for this frame's tracking of :attr:`pts` (``new_pts``, ``ok`` from
        :func:`motion.track_points`); on a scene change start over on ``cur``."""
        tracked = len(ok)
        failed = float(1.0 - ok.mean()) if tracked else 0.0
        if tracked >= MIN_SCENE_POINTS and failed > scene_change:
            self.epoch += 1
            self.last_change_seq = seq
            self.start(cur, seq)
            return SceneStep(True, failed, tracked)
        fit = motion.fit_similarity(self.pts[ok], new_pts[ok]) if ok.sum() >= 3 else None
        if fit is not None:
            self._acc = fit.transform @ self._acc
        self.pts = new_pts[ok]
        if len(self.pts) < SCENE_POINTS // 2:
            more = motion.detect_points(cur.grey, np.ones_like(cur.grey),
                                        SCENE_POINTS - len(self.pts), avoid=self.pts)
            self.pts = np.concatenate([self.pts, more])
        self._history.append((seq, self.epoch, self._acc.copy()))
        return SceneStep(False, failed, tracked)

    def between(self, seq_from: int, seq_to: int) -> np.ndarray | None:
        """Camera motion from frame ``seq_from`` to ``seq_to`` (working pixels), using the
        nearest recorded frames at or before each; None across a scene change or when either is
        older than the history."""
        a, b = self._at(seq_from), self._at(seq_to)
        if a is None or b is None or a[0] != b[0]:
            return None
        return b[1] @ np.linalg.inv(a[1])

    def epoch_at(self, seq: int) -> int:
        """The scene epoch of frame ``seq`` (the current one for frames newer than recorded)."""
        found = self._at(seq)
        return self.epoch if found is None else found[0]

    def _at(self, seq: int) -> tuple[int, np.ndarray] | None:
        best = None
        for s, epoch, acc in self._history:
            if s <= seq:
                best = (epoch, acc)
            else:
                break
        return best
