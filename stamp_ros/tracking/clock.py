"""Frame times: sequence number -> seconds.

Frames and answers are identified by a growing sequence number (the node's frame counter, the
bag's frame index), but the Kalman filters, the memory's gates and the reported ages need
seconds. A frame's time is its header stamp when the caller gave one, else ``seq /
frame_rate`` offset from the nearest stamped frame (a camera without a clock, a test), so the
two kinds of time never mix on one stream.
"""

from __future__ import annotations

from collections import deque

TIME_HISTORY = 512
"""Frame stamps kept (seq -> seconds)."""


class FrameClock:
    """The stamps of the newest TIME_HISTORY stamped frames (not thread-safe: the tracker's
    lock guards it)."""

    def __init__(self, frame_rate: float) -> None:
        self.frame_rate = float(frame_rate)
        self._times: deque[tuple[int, float]] = deque(maxlen=TIME_HISTORY)

    def record(self, seq: int, stamp: float | None) -> None:
        """Frame ``seq`` was taken at ``stamp`` seconds (None: unknown, nothing kept). Stamps
        come in frame order; an older frame's is ignored."""
        if stamp is not None and (not self._times or seq > self._times[-1][0]):
            self._times.append((seq, float(stamp)))

    def time_of(self, seq: int) -> float:
        """Seconds of frame ``seq``: its stamp when recorded, else seq/frame_rate (offset from
        the nearest stamped frame)."""
        best = None
        for s, t in self._times:
            if best is None or abs(s - seq) < abs(best[0] - seq):
                best = (s, t)
        if best is None:
            return seq / self.frame_rate
        return best[1] + (seq - best[0]) / self.frame_rate
