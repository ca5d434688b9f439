"""Counters behind the node's ``stats:`` log line and its /diagnostics status.

The counters are updated from every callback and from the inference thread, so they are a few
integers and bounded samples behind one lock; the report is built from a snapshot on the timer.
Everything in a report covers the period since the previous one: counts, rates and the latency
percentiles (results and frames alike).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from stamp_ros.spatial.status3d import KINDS, Reason3D

LATENCY_SAMPLES = 1000
"""Latencies kept per period (results, frames): every one up to this many, then a uniform
sample of the whole period."""


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class PeriodSample:
    """The values of one report period, for its percentiles: all of them up to ``capacity``,
    then a uniform random sample of the whole period (reservoir sampling), so that a busy
    period is described from its start, not by its last ``capacity`` values. Bounded memory, a
    constant cost per value; not thread-safe (:class:`Stats` holds its lock)."""

    def __init__(self, capacity: int = LATENCY_SAMPLES, seed: int = 0) -> None:
        self.capacity = capacity
        self._values: list[float] = []
        self._seen = 0
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self._seen += 1
        if len(self._values) < self.capacity:
            self._values.append(value)
            return
        slot = self._rng.randrange(self._seen)
        if slot < self.capacity:
            self._values[slot] = value

    def values(self) -> list[float]:
        return list(self._values)

    def clear(self) -> None:
        self._values.clear()
        self._seen = 0


class Stats:
    """Frames in, results out and their latencies since the last report.

    ``clock`` (monotonic seconds) times the periods and rates, ``wall_ns`` (this host's
    wall clock) the frames' transport latency; tests inject both."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._wall_ns = wall_ns
        self._lock = threading.Lock()
        self._frames = 0
        self._results = 0
        self._errors = 0
        self._tracking_failures = 0
        self._last_error = ""
        self._latencies = PeriodSample(seed=1)
        self._frame_latencies = PeriodSample(seed=2)
        self._first_frame: float | None = None
        """When the first frame of this node run arrived (None: none yet)."""
        self._lifted: Counter[str] = Counter()
        self.last_reasons_3d: dict[str, str] = {}
        """The latest text of each 3D reason kind (kept across reports)."""
        self.since = clock()
        """Start of the current period (the last report, or the node's start)."""

    def frame_received(self, stamp_ns: int | None) -> None:
        """One camera frame arrived; ``stamp_ns`` (its header stamp) gives the transport
        latency against this host's clock, meaningful when the camera's clock is synchronised."""
        latency = None if not stamp_ns else (self._wall_ns() - stamp_ns) / 1e6
        now = self._clock()
        with self._lock:
            self._frames += 1
            if self._first_frame is None:
                self._first_frame = now
            if latency is not None and -1e3 < latency < 6e4:  # ignore sim or unsynced stamps
                self._frame_latencies.add(latency)

    def answered(self, success: bool, total_ms: float, error: str) -> None:
        """A request was answered (successfully or with an error result)."""
        with self._lock:
            if success:
                self._results += 1
                self._latencies.add(total_ms)
            else:
                self._errors += 1
                self._last_error = error

    def tracking_failed(self) -> None:
        """Grounding the tracks on a continuous answer failed (the answer was published
        without track ids)."""
        with self._lock:
            self._tracking_failures += 1

    def lifted(self, reasons: Sequence[Reason3D | None]) -> None:
        """The 3D outcome of one result: per instance None (has 3D) or why not."""
        with self._lock:
            for reason in reasons:
                self._lifted["ok" if reason is None else reason.kind] += 1
                if reason is not None:
                    self.last_reasons_3d[reason.kind] = reason.text

    def snapshot_and_reset(self) -> dict[str, Any]:
        """Rates over the time since the last snapshot, then start a new period."""
        return self.snapshot(reset=True)

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        """Counts, rates and latency percentiles of the period since the last reset; ``reset``
        starts a new period. The input rate counts from the first frame in the period the
        camera started in (not from the node's start): frames per second since it arrived,
        between the frames."""
        with self._lock:
            now = self._clock()
            span = max(1e-6, now - self.since)
            latencies = self._latencies.values()
            frame_latencies = self._frame_latencies.values()
            snap: dict[str, Any] = {
                "input_rate_hz": self._input_rate(now, span),
                "result_rate_hz": self._results / span,
                "errors": self._errors,
                "last_error": self._last_error,
                "tracking_failures": self._tracking_failures,
                "latency_p50_ms": _percentile(latencies, 0.5),
                "latency_p90_ms": _percentile(latencies, 0.9),
                "frame_latency_p50_ms": _percentile(frame_latencies, 0.5),
                "frame_latency_p90_ms": _percentile(frame_latencies, 0.9),
                "objects_3d": self._lifted["ok"],
            }
            snap.update({f"no_3d_{kind}": self._lifted[kind] for kind in KINDS
                         if self._lifted[kind]})
            if reset:
                self._frames = self._results = self._errors = self._tracking_failures = 0
                self._lifted.clear()
                self._latencies.clear()
                self._frame_latencies.clear()
                self.since = now
            return snap

    def _input_rate(self, now: float, span: float) -> float:
        """Frames per second in the period; in the period the first frame arrived in, over the
        time since it arrived (the frames after it over that time)."""
        first = self._first_frame
        if first is None or first <= self.since:
            return self._frames / span
        observed = now - first
        return (self._frames - 1) / observed if observed > 0 else 0.0


def stats_line(snap: dict[str, Any]) -> str:
    """The ``stats:`` log line: every value of the snapshot, floats to one decimal."""
    return "stats: " + ", ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in snap.items())


def status_3d(name: str, snap: dict[str, Any], last_texts: dict[str, str],
              depth_in_use: bool) -> DiagnosticStatus:
    """Objects with and without 3D in the period, counted per reason (with the latest text of
    each); WARN when depth is in use and some object lacked 3D."""
    counts = {kind: snap.get(f"no_3d_{kind}", 0) for kind in KINDS}
    missing = {kind: n for kind, n in counts.items() if n}
    status = DiagnosticStatus(name=name, hardware_id="3d")
    status.values = [KeyValue(key="objects with 3D", value=str(snap.get("objects_3d", 0)))]
    status.values += [KeyValue(key=f"no 3D: {kind}",
                               value=f"{n} (last: {last_texts.get(kind, '')})")
                      for kind, n in missing.items()]
    if missing and depth_in_use:
        worst = max(missing, key=missing.get)
        status.level = DiagnosticStatus.WARN
        status.message = (f"{sum(missing.values())} object(s) without 3D, mostly: "
                          f"{last_texts.get(worst, worst)}")[:200]
    else:
        status.level = DiagnosticStatus.OK
        status.message = "ok" if depth_in_use else "no depth configured"
    return status


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
