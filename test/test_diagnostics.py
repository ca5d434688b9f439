"""The node's counters behind the ``stats:`` line and /diagnostics
(:class:`stamp_ros.ros.diagnostics.Stats`), without spinning a node: a clock is injected where
time matters, so periods and rates are exact."""

from __future__ import annotations

import pytest

pytest.importorskip("diagnostic_msgs")

from stamp_ros.ros.diagnostics import LATENCY_SAMPLES, Stats


class Clock:
    """Monotonic seconds and wall-clock nanoseconds the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.wall_ns = 1_700_000_000 * 10**9

    def monotonic(self) -> float:
        return self.t

    def time_ns(self) -> int:
        return self.wall_ns

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall_ns += int(seconds * 1e9)


def stats() -> tuple[Stats, Clock]:
    clock = Clock()
    return Stats(clock=clock.monotonic, wall_ns=clock.time_ns), clock


def test_result_latencies_cover_only_the_period_since_the_last_report():
    s = Stats()
    for _ in range(50):
        s.answered(True, 900.0, "")
    first = s.snapshot_and_reset()
    assert first["latency_p50_ms"] == first["latency_p90_ms"] == 900.0
    empty = s.snapshot_and_reset()
    assert empty["latency_p50_ms"] == empty["latency_p90_ms"] == 0.0, "no result this period"
    for ms in (10.0, 20.0, 30.0, 40.0):
        s.answered(True, ms, "")
    s.answered(False, 5000.0, "failed")  # an error result has no latency sample
    snap = s.snapshot_and_reset()
    assert snap["latency_p50_ms"] == 30.0 and snap["latency_p90_ms"] == 40.0
    assert snap["errors"] == 1


def test_frame_latencies_cover_only_the_period_since_the_last_report():
    s, clock = stats()
    for _ in range(20):
        s.frame_received(clock.wall_ns - 300_000_000)  # 300 ms behind
    assert s.snapshot_and_reset()["frame_latency_p50_ms"] == pytest.approx(300.0)
    for _ in range(20):
        s.frame_received(clock.wall_ns - 5_000_000)  # 5 ms
    snap = s.snapshot_and_reset()
    assert snap["frame_latency_p50_ms"] == snap["frame_latency_p90_ms"] == pytest.approx(5.0)
    assert s.snapshot_and_reset()["frame_latency_p90_ms"] == 0.0


def test_a_long_period_is_described_from_its_start_not_by_its_last_samples():
    """More results in one period than the samples kept: the percentiles still describe the
    whole period (a slow first half and a fast second half), not its last few hundred."""
    s = Stats()
    n = 3 * LATENCY_SAMPLES
    for i in range(2 * n):
        s.answered(True, 1000.0 if i < n else 10.0, "")
        s.frame_received(None)
    snap = s.snapshot_and_reset()
    assert snap["latency_p90_ms"] == 1000.0 and snap["latency_p50_ms"] in (10.0, 1000.0)
    low = [s.answered(True, 10.0, "") for _ in range(n)]
    assert low and s.snapshot()["latency_p90_ms"] == 10.0, "the next period starts empty"


def test_rates_are_per_period_and_the_first_frames_count_from_their_arrival():
    """Rates over the period; in the period where the camera starts (mid-period, after the
    node's start), the input rate counts from the first frame, not from the node's start."""
    s, clock = stats()
    clock.advance(25.0)  # the node is up, no camera yet
    for _ in range(51):  # then 10 Hz for 5 s
        s.frame_received(None)
        clock.advance(0.1)
    clock.t -= 0.1  # now = the 51st frame's arrival
    first = s.snapshot_and_reset()
    assert first["input_rate_hz"] == pytest.approx(10.0)
    for _ in range(300):  # a full period of 10 Hz
        clock.advance(0.1)
        s.frame_received(None)
        s.answered(True, 50.0, "")
    snap = s.snapshot_and_reset()
    assert snap["input_rate_hz"] == pytest.approx(10.0)
    assert snap["result_rate_hz"] == pytest.approx(10.0)
    clock.advance(30.0)
    assert s.snapshot_and_reset()["input_rate_hz"] == 0.0, "a silent period reads 0"


def test_tracking_failures_are_counted_per_period():
    s = Stats()
    s.tracking_failed()
    s.tracking_failed()
    assert s.snapshot()["tracking_failures"] == 2
    assert s.snapshot_and_reset()["tracking_failures"] == 2
    assert s.snapshot()["tracking_failures"] == 0
