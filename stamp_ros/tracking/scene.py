"""The whole image's motion: camera movement between frames, and scene changes.

Points spread over the whole frame are tracked every frame along with the objects' own points.
Two things come out of them:

* a *scene change*: when most of them fail the forward-backward check at once (a cut, the camera
  covered, a jump the flow cannot follow), nothing tracked before can be trusted; every track is
  marked lost and a fresh model answer is asked for;
* the *camera motion* (a similarity per frame, accumulated): a model answer arrives for a frame
  some time in the past, and the motion since then is where the search for a new object's
  points starts in the current frame; a hidden object's motion is kept with it removed.

The camera motion is the *background's*: points on the tracked objects (their boxes, padded:
``objects`` in :meth:`SceneMotion.update`) are left out of it. A textured object has more
corners than most backgrounds, and one moving about RANSAC's threshold per frame was counted
with the background: a still camera then seemed to follow the object at up to two thirds of
its speed, and that share went missing from the object's velocity (measured on
``bench/permanence.py`` b: 30 instead of 45 working px/s).
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


STILL_PX = 0.5
"""Working pixels: a frame-to-frame camera motion that moves no image corner further than this
is taken as none. A still camera then stays exactly still in the accumulated motion (the
per-frame fits' noise, and objects moving across a weakly textured background, would
otherwise add up to a drift that the hidden objects' predicted positions inherit)."""


def _moves(transform: np.ndarray, size: tuple[int, int]) -> bool:
    w, h = size
    corners = np.float32([[0, 0], [w, 0], [0, h], [w, h]])
    return float(np.abs(motion.apply(transform, corners) - corners).max()) > STILL_PX


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

    def drop(self, objects: np.ndarray | None) -> None:
        """Forget the points on ``objects`` (working-size uint8, nonzero = a tracked object):
        call before tracking :attr:`pts` onto the next frame."""
        if objects is None or not len(self.pts):
            return
        h, w = objects.shape
        xy = np.clip(np.round(self.pts).astype(int), 0, [w - 1, h - 1])
        self.pts = self.pts[objects[xy[:, 1], xy[:, 0]] == 0]

    def update(self, cur: WorkingFrame, seq: int, new_pts: np.ndarray, ok: np.ndarray,
               scene_change: float, objects: np.ndarray | None = None,
               objects_ok: np.ndarray | None = None) -> SceneStep:
        """Account for this frame's tracking of :attr:`pts` (``new_pts``, ``ok`` from
        :func:`motion.track_points`); on a scene change start over on ``cur``. New points are
        not looked for on ``objects`` (see :meth:`drop`). ``objects_ok``: the tracked objects'
        points' check on this frame; a scene change is judged on them too while the background
        has fewer than MIN_SCENE_POINTS (an object filling the view leaves no background, and a
        cut would otherwise pass as the object hidden in place)."""
        judged = ok
        if len(ok) < MIN_SCENE_POINTS and objects_ok is not None and len(objects_ok):
            judged = np.concatenate([ok, objects_ok])
        tracked = len(judged)
        failed = float(1.0 - judged.mean()) if tracked else 0.0
        if tracked >= MIN_SCENE_POINTS and failed > scene_change:
            self.epoch += 1
            self.last_change_seq = seq
            self.start(cur, seq)
            return SceneStep(True, failed, tracked)
        fit = motion.fit_similarity(self.pts[ok], new_pts[ok]) if ok.sum() >= 3 else None
        if fit is not None and _moves(fit.transform, cur.size):
            self._acc = fit.transform @ self._acc
        self.pts = new_pts[ok]
        if len(self.pts) < SCENE_POINTS // 2:
            region = (np.ones_like(cur.grey) if objects is None
                      else (objects == 0).astype(np.uint8))
            more = motion.detect_points(cur.grey, region, SCENE_POINTS - len(self.pts),
                                        avoid=self.pts)
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

    def camera_at(self, seq: int) -> tuple[int, np.ndarray] | None:
        """(epoch, accumulated camera motion epoch start -> frame ``seq``) of the nearest
        recorded frame at or before ``seq``; None before the first."""
        return self._at(seq)

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
