"""Counters behind the node's ``stats:`` log line and its /diagnostics status.

The counters are updated from every callback and from the inference thread, so they are a few
integers and bounded deques behind one lock; the report is built from a snapshot on the timer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

LATENCY_SAMPLES = 200


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Stats:
    """Frames in, results out and their latencies since the last report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames = 0
        self._results = 0
        self._errors = 0
        self._last_error = ""
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._frame_latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.since = time.monotonic()

    def frame_received(self, stamp_ns: int | None) -> None:
        """One camera frame arrived; ``stamp_ns`` (its header stamp) gives the transport
        latency against this host's clock, meaningful when the camera's clock is synchronised."""
        latency = None if not stamp_ns else (time.time_ns() - stamp_ns) / 1e6
        with self._lock:
            self._frames += 1
            if latency is not None and -1e3 < latency < 6e4:  # ignore sim or unsynced stamps
                self._frame_latencies.append(latency)

    def answered(self, success: bool, total_ms: float, error: str) -> None:
        """A request was answered (successfully or with an error result)."""
        with self._lock:
            if success:
                self._results += 1
                self._latencies.append(total_ms)
            else:
                self._errors += 1
                self._last_error = error

    def snapshot_and_reset(self) -> dict[str, Any]:
        """Rates over the time since the last snapshot, then start a new period."""
        with self._lock:
            now = time.monotonic()
            span = max(1e-6, now - self.since)
            latencies, frame_latencies = list(self._latencies), list(self._frame_latencies)
            snap: dict[str, Any] = {
                "input_rate_hz": self._frames / span,
                "result_rate_hz": self._results / span,
                "errors": self._errors,
                "last_error": self._last_error,
                "latency_p50_ms": _percentile(latencies, 0.5),
                "latency_p90_ms": _percentile(latencies, 0.9),
                "frame_latency_p50_ms": _percentile(frame_latencies, 0.5),
                "frame_latency_p90_ms": _percentile(frame_latencies, 0.9),
            }
            self._frames = self._results = self._errors = 0
            self._frame_latencies.clear()
            self.since = now
            return snap


def stats_line(snap: dict[str, Any]) -> str:
    """The ``stats:`` log line: every value of the snapshot, floats to one decimal."""
    return "stats: " + ", ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in snap.items())


def diagnostic_array(name: str, hardware_id: str, snap: dict[str, Any], stamp: Any,
                     inactive_reason: str | None) -> DiagnosticArray:
    """One DiagnosticStatus: ERROR while no model serves (with the reason), WARN when the
    period saw errors, else OK; every snapshot value as a key/value pair."""
    status = DiagnosticStatus()
    status.name = name
    status.hardware_id = hardware_id
    if inactive_reason is not None:
        status.level, status.message = DiagnosticStatus.ERROR, inactive_reason[:200]
    elif snap["errors"]:
        status.level, status.message = DiagnosticStatus.WARN, "errors in the last period"
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    status.values = [KeyValue(key=k, value=str(v)) for k, v in snap.items()]
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [status]
    return arr
