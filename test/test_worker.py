"""The inference worker's queueing rules, without ROS or a model."""

from __future__ import annotations

import threading
import time

from stamp_ros.ros.worker import InferenceWorker, Job


def job(i: int, source: str = "topic") -> Job:
    return Job(request_id=f"r{i}", query="q", source=source, asked_at=time.monotonic())


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.handled: list[str] = []
        self.rejected: list[tuple[str, str]] = []
        self.gate = gate
        self.started = threading.Event()

    def handle(self, j: Job) -> None:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.handled.append(j.request_id)

    def reject(self, j: Job, reason: str) -> None:
        self.rejected.append((j.request_id, reason))


def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_requests_are_handled_in_order():
    rec = Recorder()
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4)
    for i in range(3):
        assert w.submit(job(i))
    wait_until(lambda: len(rec.handled) == 3)
    assert rec.handled == ["r0", "r1", "r2"]
    w.stop()


def test_overflow_is_rejected_with_a_reason_and_the_rest_still_run():
    gate = threading.Event()
    rec = Recorder(gate)
    w = InferenceWorker(rec.handle, rec.reject, max_pending=2)
    w.submit(job(0))
    assert rec.started.wait(5)  # r0 is running, the queue is empty again
    results = [w.submit(job(i)) for i in range(1, 5)]
    assert results == [True, True, False, False]
    assert [r[0] for r in rec.rejected] == ["r3", "r4"]
    assert all("queue full" in r[1] and "max_pending" in r[1] for r in rec.rejected)
    gate.set()
    wait_until(lambda: len(rec.handled) == 3)
    assert rec.handled == ["r0", "r1", "r2"] and w.rejected == 2
    w.stop()


def test_continuous_frames_are_dropped_while_busy_never_queued():
    gate = threading.Event()
    rec = Recorder(gate)
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4)
    w.offer_continuous(job(0, "continuous"))
    assert rec.started.wait(5)
    for i in range(1, 20):
        w.offer_continuous(job(i, "continuous"))
    assert w.depth == 1  # only the newest frame waits
    gate.set()
    wait_until(lambda: len(rec.handled) == 2)
    time.sleep(0.1)
    assert rec.handled == ["r0", "r19"] and w.dropped_frames == 18
    w.stop()


def test_explicit_requests_go_before_the_continuous_frame():
    gate = threading.Event()
    rec = Recorder(gate)
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4)
    w.submit(job(0))
    assert rec.started.wait(5)
    w.offer_continuous(job(1, "continuous"))
    w.submit(job(2, "service"))
    gate.set()
    wait_until(lambda: len(rec.handled) == 3)
    assert rec.handled == ["r0", "r2", "r1"]
    w.stop()


def test_stop_answers_waiting_requests_and_ends_the_thread():
    gate = threading.Event()
    rec = Recorder(gate)
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4)
    w.submit(job(0))
    assert rec.started.wait(5)
    w.submit(job(1))
    threading.Timer(0.2, gate.set).start()
    w.stop("deactivated")
    assert rec.rejected == [("r1", "deactivated")] and not w.alive()
    assert not w.submit(job(2)) and rec.rejected[-1][1].startswith("the node is shutting down")


def test_a_crashing_handler_does_not_kill_the_worker():
    handled = []

    def handle(j: Job) -> None:
        if j.request_id == "r0":
            raise RuntimeError("boom")
        handled.append(j.request_id)

    w = InferenceWorker(handle, lambda j, r: None, max_pending=4)
    w.submit(job(0))
    w.submit(job(1))
    wait_until(lambda: handled == ["r1"])
    assert w.alive()
    w.stop()


def test_continuous_cameras_take_turns():
    gate = threading.Event()
    rec = Recorder(gate)
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4)
    w.offer_continuous(job(0, "continuous"), key="front")
    assert rec.started.wait(5)
    for i in range(1, 7):  # front and wrist alternate, newest per camera wins
        w.offer_continuous(job(i, "continuous"), key="front" if i % 2 else "wrist")
    assert w.depth == 2
    gate.set()
    wait_until(lambda: len(rec.handled) == 3)
    assert rec.handled == ["r0", "r5", "r6"] and w.dropped_frames == 4
    w.stop()
