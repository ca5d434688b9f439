"""Arrivals on one input topic: how many, how often, how long ago.

The node calls :meth:`InputMonitor.arrived` from its topic callbacks (a clock read and a deque
append: no lock, no allocation beyond the float, nothing that grows), and reads rate, age and
silence from its timers. Pure Python, so the rules are tested without ROS.
"""

from __future__ import annotations

import time
from collections import deque

RATE_WINDOW_S = 5.0
"""Rates are measured over the last few seconds: long enough to be stable at 1 Hz, short enough
to show a stream that stopped. Over less while the input has been observed for less (see
:meth:`InputMonitor.rate_hz`)."""
MAX_ARRIVALS = 512
"""Arrival times kept: a 60 Hz stream over :data:`RATE_WINDOW_S` fits."""


class InputMonitor:
    """One input of one camera (``role`` is ``image``, ``depth``, ``camera_info``, ``query``)."""

    def __init__(self, role: str, camera: str, remap_name: str, msg_type: str) -> None:
        self.role = role
        self.camera = camera
        self.remap_name = remap_name
        self.msg_type = msg_type
        self.topic = remap_name
        """Fully resolved name; the node sets it once the subscription exists."""
        self.total = 0
        self.first: float | None = None
        """When the first message arrived (None: none yet)."""
        self.last: float | None = None
        self.watch_since: float | None = None
        """When silence started to count (activation); None while not watched."""
        self._arrivals: deque[float] = deque(maxlen=MAX_ARRIVALS)

    def arrived(self, now: float | None = None) -> None:
        """One message arrived (called from the topic callback)."""
        now = time.monotonic() if now is None else now
        if self.first is None:
            self.first = now
        self.last = now
        self.total += 1
        self._arrivals.append(now)

    def watch(self, now: float | None = None) -> None:
        """Start timing silence (at activation): what arrived before does not count."""
        self.watch_since = time.monotonic() if now is None else now
        self.total = 0

    def unwatch(self) -> None:
        self.watch_since = None

    def rate_hz(self, now: float | None = None) -> float:
        """Messages per second over the last :data:`RATE_WINDOW_S` seconds, or over the time
        the input has actually been observed when that is shorter: from its first message, or
        from when watching began (activation; what arrived before does not count, as for
        :attr:`total`), whichever is later, until ``now``. From a first message the rate is
        the messages after it over the time since it (one message alone: 0, no interval
        yet)."""
        now = time.monotonic() if now is None else now
        arrivals = list(self._arrivals)  # a copy: callbacks may append meanwhile
        recent = [t for t in arrivals if now - t <= RATE_WINDOW_S]
        if len(recent) == len(arrivals) == MAX_ARRIVALS:  # faster than the deque holds
            return (len(recent) - 1) / max(1e-6, now - recent[0])
        first, watched = self.first, self.watch_since
        if first is None:
            return 0.0
        if watched is not None and watched > first:  # a start that is no message
            if now - watched >= RATE_WINDOW_S:
                return len(recent) / RATE_WINDOW_S
            since = [t for t in recent if t >= watched]
            return len(since) / (now - watched) if now > watched else 0.0
        if now - first >= RATE_WINDOW_S:
            return len(recent) / RATE_WINDOW_S
        after = [t for t in recent if t > first]
        return len(after) / (now - first) if now > first else 0.0

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since the last message (None: none ever)."""
        if self.last is None:
            return None
        return (time.monotonic() if now is None else now) - self.last

    def silent_s(self, now: float | None = None) -> float | None:
        """Seconds without a message since watching began (None while not watched)."""
        if self.watch_since is None:
            return None
        now = time.monotonic() if now is None else now
        since = self.watch_since if self.last is None else max(self.last, self.watch_since)
        return now - since
