"""The inference worker's queueing rules, without ROS or a model."""

from __future__ import annotations

import threading
import time

from stamp_ros.inference.scheduler import InferenceWorker, Job


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


# ------------------------------------------------------------------ several lanes (processes)
class Lanes:
    """Handler for a two-lane worker: each job blocks on its own gate, so a test decides when
    it ends; records which lane (segmenter) ran which job."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.started: dict[str, str] = {}
        self.handled: list[tuple[str, str]] = []
        self.rejected: list[tuple[str, str]] = []
        self._cond = threading.Condition()

    def handle(self, j: Job) -> None:
        with self._cond:
            self.started[j.request_id] = j.segmenter
            gate = self.gates.setdefault(j.request_id, threading.Event())
            self._cond.notify_all()
        gate.wait(5)
        with self._cond:
            self.handled.append((j.request_id, j.segmenter))
            self._cond.notify_all()

    def reject(self, j: Job, reason: str) -> None:
        with self._cond:
            self.rejected.append((j.request_id, reason))
            self._cond.notify_all()

    def release(self, request_id: str) -> None:
        with self._cond:
            self.gates.setdefault(request_id, threading.Event()).set()

    def wait(self, predicate, timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self), timeout), (
                self.started, self.handled, self.rejected)


def conv_job(i: int, conversation: str) -> Job:
    j = job(i, "service")
    j.conversation = conversation
    return j


def test_two_lanes_run_two_requests_at_once_least_busy_first():
    rec = Lanes()
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4, lanes=["gpu0", "gpu1"])
    w.submit(job(0))
    rec.wait(lambda r: "r0" in r.started)
    w.submit(job(1))  # the idle lane takes it while r0 still runs
    rec.wait(lambda r: "r1" in r.started)
    assert {rec.started["r0"], rec.started["r1"]} == {"gpu0", "gpu1"} and w.busy
    w.submit(job(2))  # both busy: it waits, then goes to whichever lane is free first
    assert w.depth == 1
    rec.release("r1")
    rec.wait(lambda r: "r2" in r.started)
    assert rec.started["r2"] == rec.started["r1"]
    for i in (0, 2):
        rec.release(f"r{i}")
    rec.wait(lambda r: len(r.handled) == 3)
    w.stop()
    assert not w.alive()


def test_continuous_cameras_are_pinned_to_their_lane():
    rec = Lanes()
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4, lanes=["gpu0", "gpu1"],
                        pins={"front": 1, "wrist": 0})
    for i, key in enumerate(("front", "wrist", "front", "wrist")):
        rec.release(f"r{i}")
        w.offer_continuous(job(i, "continuous"), key=key)
        rec.wait(lambda r, i=i: f"r{i}" in r.started)
    assert [rec.started[f"r{i}"] for i in range(4)] == ["gpu1", "gpu0", "gpu1", "gpu0"]
    assert w.pinned_lane("roof") == 0 and w.pinned_lane("side") == 1  # round robin
    w.stop()


def test_a_lane_down_takes_nothing_and_with_no_lane_up_waiting_requests_are_answered():
    rec = Lanes()
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4, lanes=["gpu0", "gpu1"],
                        pins={"front": 0})
    w.lane_down(0, "inference process died: signal 9 (SIGKILL); restarting")
    w.offer_continuous(job(9, "continuous"), key="front")  # its lane is down: dropped
    assert w.dropped_frames == 1 and w.depth == 0
    w.submit(job(0))
    rec.wait(lambda r: "r0" in r.started)
    assert rec.started["r0"] == "gpu1"  # the other lane serves meanwhile
    w.submit(job(1))  # waits for gpu1 (gpu0 is down), is not rejected
    w.lane_down(1, "inference process died: signal 6 (SIGABRT); restarting")
    rec.wait(lambda r: r.rejected)
    assert rec.rejected == [("r1", "inference process died: signal 6 (SIGABRT); restarting")]
    rec.release("r0")  # the in-flight request is the handler's to answer
    rec.wait(lambda r: len(r.handled) == 1)
    # Restarting: a new request waits for the reload instead of failing.
    w.submit(job(2))
    rec.release("r2")
    assert w.depth == 1
    w.lane_up(0)
    rec.wait(lambda r: ("r2", "gpu0") in r.handled)
    # Down for good (the reload failed) on every lane: refused at once with the reason.
    w.lane_down(0, "model could not be loaded", coming_back=False)
    w.lane_down(1, "model could not be loaded", coming_back=False)
    assert not w.submit(job(3))
    assert rec.rejected[-1] == ("r3", "model could not be loaded")
    w.stop()


def test_a_conversation_follows_its_lane_unless_that_lane_is_busy():
    rec = Lanes()
    w = InferenceWorker(rec.handle, rec.reject, max_pending=4, lanes=["gpu0", "gpu1"])
    rec.release("r0")
    w.submit(conv_job(0, "table"))
    rec.wait(lambda r: len(r.handled) == 1)
    lane = rec.started["r0"]
    for i in range(1, 4):  # both lanes idle each time: the turn goes to the conversation's
        rec.release(f"r{i}")
        w.submit(conv_job(i, "table"))
        rec.wait(lambda r, i=i: len(r.handled) == i + 1)
        assert rec.started[f"r{i}"] == lane
    w.submit(conv_job(4, "table"))  # held on its lane ...
    rec.wait(lambda r: "r4" in r.started)
    assert rec.started["r4"] == lane
    rec.release("r5")
    w.submit(conv_job(5, "table"))  # ... so the next turn goes to the idle lane
    rec.wait(lambda r: "r5" in r.started)
    assert rec.started["r5"] != lane
    rec.release("r4")
    w.stop()
