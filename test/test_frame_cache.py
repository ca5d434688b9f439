"""The frame cache's freshness rules, without ROS: freshness, waiting, timeouts."""

from __future__ import annotations

import threading
import time

import pytest

from stamp_ros.pipeline.frame_cache import FrameCache, NoFreshFrame


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_fresh_frame_is_returned_without_waiting():
    clock = FakeClock()
    cache = FrameCache(clock)
    cache.put("a")
    clock.t += 0.5
    assert cache.fresh(max_age=1.0, timeout=0.0).msg == "a"


def test_stale_frame_is_refused_with_its_age_in_the_error():
    clock = FakeClock()
    cache = FrameCache(clock)
    cache.put("old")
    clock.t += 3.0
    with pytest.raises(NoFreshFrame, match=r"3\.00 s old"):
        cache.fresh(max_age=1.0, timeout=0.0)


def test_no_frame_at_all_is_an_error_after_the_timeout():
    cache = FrameCache()
    t0 = time.monotonic()
    with pytest.raises(NoFreshFrame, match="no camera frame received"):
        cache.fresh(max_age=1.0, timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 2.0


def test_waits_for_a_frame_that_arrives_within_the_timeout():
    cache = FrameCache()
    cache.put("stale")
    time.sleep(0.15)
    threading.Timer(0.1, cache.put, args=("new",)).start()
    assert cache.fresh(max_age=0.1, timeout=2.0).msg == "new"


def test_frame_fresh_when_asked_stays_valid_while_queued():
    clock = FakeClock()
    cache = FrameCache(clock)
    cache.put("a")
    asked = clock.t + 0.8
    clock.t += 1.5  # the request waited in the queue
    assert cache.fresh(max_age=1.0, timeout=0.0, asked_at=asked).msg == "a"


def test_newest_frame_wins_and_seq_counts_arrivals():
    cache = FrameCache()
    for name in "abc":
        cache.put(name)
    assert cache.latest().msg == "c" and cache.latest().seq == 3 and cache.count == 3
