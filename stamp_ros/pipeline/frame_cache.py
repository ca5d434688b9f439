"""The newest frame of one camera, with the once-mode freshness rule (max age, bounded wait).

Plain Python (no rclpy), so the freshness rule is unit-tested without ROS. Ages are measured on
the node's monotonic clock from the moment a frame *arrived*, not from its header stamp: camera
clocks that are not synchronised with the robot (or run in sim time) then cannot make every
frame look stale or fresh. The header itself is carried through untouched so that results are
stamped with the source frame's header.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Frame:
    """A received camera message, not yet converted (conversion happens only if it is used)."""

    msg: Any
    """Whatever the node stored: a message, or a serialised one that is decoded on use."""
    received: float
    """time.monotonic() when the message arrived."""
    seq: int
    """Arrival counter, so callers can tell a new frame from the one they already used."""


class NoFreshFrame(LookupError):
    """No frame newer than max_frame_age arrived within frame_timeout."""


class FrameCache:
    """Keeps only the newest frame of one camera; waiters wake when a new one arrives."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._seq = 0

    def put(self, msg: Any) -> Frame:
        with self._cond:
            self._seq += 1
            self._latest = Frame(msg, self._clock(), self._seq)
            self._cond.notify_all()
            return self._latest

    def latest(self) -> Frame | None:
        with self._cond:
            return self._latest

    @property
    def count(self) -> int:
        with self._cond:
            return self._seq

    def fresh(self, max_age: float, timeout: float, asked_at: float | None = None,
              cancelled: Callable[[], bool] | None = None) -> Frame:
        """The newest frame at most ``max_age`` old when the request was made, else wait.

        A frame that was fresh when the request was asked stays acceptable while we queue; a
        frame arriving during the wait is fresh by construction. Raises NoFreshFrame.
        """
        asked_at = self._clock() if asked_at is None else asked_at
        deadline = self._clock() + max(0.0, timeout)
        with self._cond:
            while True:
                frame = self._latest
                if frame is not None and frame.received >= asked_at - max_age:
                    return frame
                left = deadline - self._clock()
                if left <= 0 or (cancelled is not None and cancelled()):
                    break
                self._cond.wait(min(left, 0.1))
        if frame is None:
            raise NoFreshFrame(f"no camera frame received within frame_timeout {timeout:g} s")
        age = self._clock() - frame.received
        raise NoFreshFrame(
            f"newest camera frame is {age:.2f} s old (max_frame_age {max_age:g} s) and no newer "
            f"one arrived within frame_timeout {timeout:g} s"
        )
