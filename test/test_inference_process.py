"""The model in its own process (stamp_ros.inference), without ROS: the proxy answers exactly as
the engine does in-process, streams progress, cancels, maps errors, survives the process dying,
and leaves nothing behind when closed.

Real parts throughout: tiny real STAMP checkpoints, real child processes, real shared memory.
Every wait is on an observable event (a reply, a listener call, a process exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from node_harness import SMALL_PIXELS, fault_env, make_frame, make_long_answer_checkpoint
from thread_budget import torch_threads

from stamp_ros.engine.errors import EngineError, InferenceCancelled, InputError
from stamp_ros.inference import InferenceProcessDied, LoadSpec
from stamp_ros.inference.pool import InferencePool, thread_budget
from stamp_ros.inference.protocol import MaskLayout
from stamp_ros.inference.proxy import InferenceProcess
from stamp_ros.inference.slots import DATA_OFFSET, SlotRing, read_masks, write_masks

ANSWER = "Sure, it is here: <|seg|>"
FIVE = "first <|seg|> second <|seg|> third <|seg|> fourth <|seg|> fifth <|seg|>"
LONG_WORDS = 300
REPO = Path(__file__).resolve().parents[1]
THREADS = 1
"""torch threads of every inference process here, and of the in-process engine they are held
to: the hop changes no bit at equal budgets (test/thread_budget.py)."""


@pytest.fixture(scope="module", autouse=True)
def same_thread_budget_as_the_processes():
    with torch_threads(THREADS):
        yield


def spec(checkpoint: Path, **options: Any) -> LoadSpec:
    values = dict(model=str(checkpoint), device="cpu", min_pixels=SMALL_PIXELS,
                  max_pixels=SMALL_PIXELS, max_new_tokens=24, threads=THREADS)
    values.update(options)
    return LoadSpec(**values)


class Events:
    """A listener that records what it hears and lets a test wait for it."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self._cond = threading.Condition()

    def on_down(self, proc: InferenceProcess, reason: str, restarting: bool) -> None:
        self._add(("down", (reason, restarting)))

    def on_up(self, proc: InferenceProcess) -> None:
        self._add(("up", proc.pid))

    def on_warm(self, proc: InferenceProcess, times_ms: dict, error: str) -> None:
        self._add(("warm", error))

    def _add(self, item: tuple[str, Any]) -> None:
        with self._cond:
            self.log.append(item)
            self._cond.notify_all()

    def wait(self, kind: str, count: int = 1, timeout: float = 120.0) -> list[Any]:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(k == kind for k, _ in self.log) >= count, timeout)
            assert ok, f"no {count} x {kind!r} within {timeout} s: {self.log}"
            return [v for k, v in self.log if k == kind]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", answer=ANSWER)


@pytest.fixture(scope="module")
def five_checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "five", answer=FIVE)


@pytest.fixture(scope="module")
def long_checkpoint(tmp_path_factory) -> Path:
    return make_long_answer_checkpoint(tmp_path_factory.mktemp("ckpt") / "long", LONG_WORDS)


@pytest.fixture(scope="module")
def engine(checkpoint) -> Any:
    from stamp_ros.engine.segmenter import StampSegmenter

    return StampSegmenter.from_pretrained(str(checkpoint), **spec(checkpoint).segmenter_options())


@pytest.fixture(scope="module")
def served(checkpoint):
    """One process with fault injection on, shared by the tests that do not end it."""
    proc = InferenceProcess(spec(checkpoint), env=fault_env(), listener=Events())
    proc.start()
    proc.listener.wait("warm")
    yield proc
    proc.close()


def assert_same(remote: Any, local: Any) -> None:
    assert remote.text == local.text and remote.token_ids == local.token_ids
    assert remote.grid_size == local.grid_size and remote.image_size == local.image_size
    assert len(remote.instances) == len(local.instances) > 0
    for a, b in zip(remote.instances, local.instances, strict=True):
        np.testing.assert_array_equal(a.grid, b.grid)
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.mask.dtype == b.mask.dtype == np.uint8
        assert (a.bbox, a.area, a.score) == (b.bbox, b.area, b.score)


# ------------------------------------------------------------------ same answers as in-process
@pytest.mark.parametrize("size", [(97, 61), (640, 480), (1920, 1080), (320, 240)])
def test_results_equal_the_engine_in_process(served, engine, size):
    """Frames of growing and shrinking sizes (the slots grow and the process follows)."""
    rgb = make_frame(*size, seed=size[0])
    stages: list[str] = []
    remote = served.segment(rgb, "segment the square", progress=lambda s, t: stages.append(s))
    local_stages: list[str] = []
    local = engine.segment(rgb, "segment the square",
                           progress=lambda s, t: local_stages.append(s))
    assert_same(remote, local)
    assert stages == local_stages and stages[-1] == "done"
    assert served.history_answer(remote) == engine.history_answer(local)
    assert remote.hop_ms >= 0.0


def test_conversation_turns_and_forced_answers_equal_the_engine(served, engine):
    rgb = make_frame(160, 120, seed=3)
    first = engine.segment(rgb, "segment the square", image_in_first_turn=True)
    history = [("segment the square", engine.history_answer(first))]
    remote = served.segment(rgb, "and the other one?", history, image_in_first_turn=True)
    local = engine.segment(rgb, "and the other one?", history, image_in_first_turn=True)
    assert_same(remote, local)
    forced = served.segment(rgb, "segment the square", forced_answer_ids=first.token_ids)
    assert_same(forced, engine.segment(rgb, "segment the square",
                                       forced_answer_ids=first.token_ids))


def test_live_settings_travel_with_each_request(served, engine):
    rgb = make_frame(160, 120, seed=4)
    try:
        served.max_new_tokens, engine.max_new_tokens = 3, 3
        served.mask_upsample, engine.mask_upsample = "bilinear", "bilinear"
        remote = served.segment(rgb, "segment the square")
        local = engine.segment(rgb, "segment the square")
        assert len(remote.token_ids) == 3
        assert remote.text == local.text and remote.token_ids == local.token_ids
    finally:
        served.max_new_tokens, engine.max_new_tokens = 24, 24
        served.mask_upsample, engine.mask_upsample = "nearest", "nearest"


def test_more_masks_than_the_slot_holds_as_bytes_come_back_packed(five_checkpoint):
    """Five masks of a 64x48 frame need 15360 bytes as uint8; a slot of 8 KiB data holds them
    only as bits."""
    from stamp_ros.engine.segmenter import StampSegmenter

    local = StampSegmenter.from_pretrained(str(five_checkpoint),
                                           **spec(five_checkpoint).segmenter_options())
    proc = InferenceProcess(spec(five_checkpoint, warmup=False))
    proc.start()
    try:
        for size in ((64, 48), (160, 120)):
            rgb = make_frame(*size, seed=7)
            assert_same(proc.segment(rgb, "segment them"), local.segment(rgb, "segment them"))
            assert len(local.segment(rgb, "segment them").instances) == 5
    finally:
        proc.close()


def test_mask_layouts_round_trip_exactly():
    rng = np.random.default_rng(0)
    masks = [(rng.random((37, 53)) > 0.5).astype(np.uint8) for _ in range(4)]
    for room, kind in ((4 * 37 * 53, "u8"), (4 * 37 * 53 // 4, "bits"), (100, "inline")):
        buf = memoryview(bytearray(DATA_OFFSET + room))
        layout = write_masks(masks, buf)
        assert layout.kind == kind
        if kind != "inline":  # only the layout goes over the pipe
            layout = MaskLayout(layout.kind, layout.count, layout.shape)
        back = read_masks(layout, buf)
        buf[:] = bytes(len(buf))  # the slot's next request: the masks read must be copies
        assert len(back) == 4
        for a, b in zip(back, masks, strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == np.uint8
    assert write_masks([], memoryview(bytearray(DATA_OFFSET))).kind == "none"


def open_memfds() -> set[str]:
    """Names of the anonymous memory files (memfd) this process holds open or mapped."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("/memfd:"):
                names.add(target[len("/memfd:"):].removesuffix(" (deleted)"))
    return names


def segment_exists(name: str) -> bool:
    """A slot's segment is still held: a memfd of this process, or a name in /dev/shm."""
    return name in open_memfds() or os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("anonymous", [True, False], ids=["memfd", "named"])
def test_slot_ring_lends_grows_and_frees(anonymous):
    ring = SlotRing(2, anonymous=anonymous)
    a, b = ring.acquire(), ring.acquire()
    assert a is not b
    name = a.shm.name
    assert a.ref.fd is anonymous
    assert os.path.exists(f"/dev/shm/{name}") is not anonymous, "a memfd slot has a name"
    a.write_frame(make_frame(1920, 1080))
    assert a.shm.name != name and a.capacity >= 1920 * 1080 * 3
    assert not segment_exists(name), "the outgrown segment was not freed"
    ring.release(a)
    assert ring.acquire() is a
    names = ring.names
    assert all(segment_exists(n) for n in names)
    ring.close()
    assert not any(segment_exists(n) for n in names)


def test_a_segment_left_behind_under_a_reused_name_is_not_taken_over(monkeypatch):
    """Named segments (where memfd is missing): a node killed with its resource tracker leaves
    its segments in /dev/shm, named after its pid; a later node with the same pid must neither
    fail to start ('File exists', seen in CI) nor take the stale segment over: it picks
    another name."""
    import itertools
    import secrets
    from multiprocessing import shared_memory

    from stamp_ros.inference import slots

    stale = shared_memory.SharedMemory(name="stamp_ros_test_reuse_0_0_0badc0de", create=True,
                                       size=4096)
    try:
        stale.buf[:4] = b"mine"
        # The new node's counter starts where the dead one's did, and so would its names.
        monkeypatch.setattr(slots, "_names", itertools.count())
        tokens = iter(["0badc0de", "5eed5eed"])
        monkeypatch.setattr(secrets, "token_hex", lambda _n: next(tokens))
        ring = SlotRing(1, prefix="stamp_ros_test_reuse", anonymous=False)
        try:
            assert ring.names == ["stamp_ros_test_reuse_0_1_5eed5eed"]
        finally:
            ring.close()
        assert bytes(stale.buf[:4]) == b"mine"  # untouched, still there
    finally:
        stale.close()
        stale.unlink()


@pytest.mark.parametrize("anonymous", [True, False], ids=["memfd", "named"])
def test_grown_slots_reach_a_restarted_process(checkpoint, engine, monkeypatch, anonymous):
    """Frames grow the slots (a new segment each: handed over as a descriptor, or by name),
    the process dies and its replacement gets the grown slots too: every answer equals the
    engine's, bit for bit."""
    from stamp_ros.inference import slots

    monkeypatch.setattr(slots, "USE_MEMFD", anonymous)  # the fallback where memfd is missing
    proc = InferenceProcess(spec(checkpoint, warmup=False), env=fault_env())
    assert all(ref.fd is anonymous for ref in (s.ref for s in proc._ring._slots))
    proc.start()
    try:
        for size in ((1920, 1080), (97, 61), (1280, 720)):
            rgb = make_frame(*size, seed=size[1])
            assert_same(proc.segment(rgb, "segment the square"),
                        engine.segment(rgb, "segment the square"))
        with pytest.raises(InferenceProcessDied):
            proc.segment(make_frame(96, 64), "[[crash]] segment the square")
        for size in ((1920, 1080), (2048, 1536)):
            rgb = make_frame(*size, seed=size[0])
            assert_same(proc.segment(rgb, "segment the square"),
                        engine.segment(rgb, "segment the square"))
        assert proc.restarts == 1
    finally:
        proc.close()


def test_a_node_killed_with_everything_it_started_leaves_nothing_in_dev_shm(checkpoint,
                                                                            tmp_path):
    """A container stop or a process-group SIGKILL takes the node's resource tracker with it,
    so nothing is left to unlink named segments; Docker's /dev/shm is 64 MiB and a 1080p slot
    ~7 MiB. The slots have no names: nothing can be left behind."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "from stamp_ros.inference import InferenceProcess, LoadSpec\n"
        f"p = InferenceProcess(LoadSpec(model={str(checkpoint)!r}, device='cpu', "
        f"min_pixels={SMALL_PIXELS}, max_pixels={SMALL_PIXELS}, warmup=False, threads=1))\n"
        "p.start()\n"
        "rgb = np.zeros((1080, 1920, 3), np.uint8)\n"
        "rgb[200:600, 300:900] = (250, 30, 30)\n"
        "assert p.segment(rgb, 'segment the square').instances\n"  # initial + grown slots
        "print(p.pid, flush=True)\n"
        "sys.stdin.read()\n")
    before = set(os.listdir("/dev/shm"))
    owner = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=str(REPO),
                             env=dict(os.environ, PYTHONPATH=str(REPO)),
                             start_new_session=True)
    try:
        line = owner.stdout.readline()
        assert line.strip(), f"the owner did not start its process (exit {owner.wait()})"
        child = psutil.Process(int(line))
        assert os.getpgid(child.pid) == owner.pid  # the process group the kill takes down
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(30)
        child.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(owner.pid, signal.SIGKILL)
    left = sorted(n for n in set(os.listdir("/dev/shm")) - before
                  if f"_{owner.pid}_" in n or f"_{child.pid}_" in n)
    assert left == [], f"left behind in /dev/shm: {left}"


# ------------------------------------------------------------------ errors, progress, cancel
def test_bad_input_is_refused_with_the_engine_words(served, engine):
    for image, query in ((np.zeros((4, 4), np.uint8), "segment"),
                         (np.zeros((8, 8, 3), np.float32), "segment"),
                         ("not an image", "segment"),
                         (make_frame(64, 48), "   "),
                         (make_frame(64, 48), "look <|image_pad|> here")):
        with pytest.raises(InputError) as remote:
            served.segment(image, query)
        with pytest.raises(InputError) as local:
            engine.segment(image, query)
        assert str(remote.value) == str(local.value)
    with pytest.raises(InputError, match="invalid ids"):
        served.segment(make_frame(64, 48), "segment", forced_answer_ids=[-5])
    assert served.segment(make_frame(64, 48), "segment the square").instances


def test_injected_failures_are_errors_and_the_process_keeps_serving(served):
    pid = served.pid
    rgb = make_frame(96, 64)
    with pytest.raises(EngineError, match="injected failure"):
        served.segment(rgb, "[[raise]] segment")
    with pytest.raises(EngineError, match=r"CUDA out of memory.*keeps serving"):
        served.segment(rgb, "[[oom]] segment")
    assert served.segment(rgb, "segment the square").instances
    assert served.pid == pid and served.restarts == 0


def test_a_production_process_has_no_fault_hook(checkpoint):
    """The variable alone switches nothing on: the faults live in the test tree
    (test/faults), which a production install does not have on its path."""
    proc = InferenceProcess(spec(checkpoint, warmup=False),
                            env=dict(os.environ, STAMP_ROS_FAULT_INJECTION="1"))
    proc.start()
    try:
        for query in ("[[raise]] segment", "[[crash]] segment the square"):
            assert proc.segment(make_frame(96, 64), query).instances
        assert proc.restarts == 0
    finally:
        proc.close()


def test_a_progress_callback_that_raises_ends_the_request_with_its_exception(served):
    class Stop(Exception):
        pass

    def progress(stage: str, text: str) -> None:
        if stage == "vision":
            raise Stop("planner went away")

    with pytest.raises(Stop, match="planner went away"):
        served.segment(make_frame(96, 64), "segment the square", progress=progress)
    assert served.segment(make_frame(96, 64), "segment the square").instances


def test_cancel_before_and_during_decoding(long_checkpoint):
    proc = InferenceProcess(spec(long_checkpoint, max_new_tokens=LONG_WORDS + 20,
                                 warmup=False))
    proc.start()
    try:
        rgb = make_frame(96, 64)
        with pytest.raises(InferenceCancelled, match="cancelled before preprocess"):
            proc.segment(rgb, "segment", should_cancel=lambda: True)
        decoded: list[str] = []
        with pytest.raises(InferenceCancelled, match="cancelled during decoding"):
            proc.segment(rgb, "segment", progress=lambda s, t: decoded.append(s) if s ==
                         "decode" else None, should_cancel=lambda: len(decoded) >= 2)
        assert 2 <= len(decoded) < LONG_WORDS, len(decoded)
        full = proc.segment(rgb, "segment")
        assert full.text.endswith(f"w{LONG_WORDS - 1}") and full.instances
    finally:
        proc.close()


# ------------------------------------------------------------------ the process dies
@pytest.mark.parametrize("fault,how", [("[[crash]]", "signal 9 (SIGKILL)"),
                                       ("[[abort]]", "signal 6 (SIGABRT)"),
                                       ("[[exit]]", "exit code 3")])
def test_a_dying_process_answers_its_call_and_is_restarted(checkpoint, fault, how):
    events = Events()
    proc = InferenceProcess(spec(checkpoint, warmup=False), env=fault_env(), listener=events)
    proc.start()
    try:
        first_pid = proc.pid
        with pytest.raises(InferenceProcessDied) as died:
            proc.segment(make_frame(96, 64), f"{fault} segment the square")
        assert str(died.value) == f"inference process died: {how}; restarting"
        assert events.wait("down") == [(str(died.value), True)]
        assert not psutil.pid_exists(first_pid) or \
            psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
        # The next call waits for the reload and is answered by the new process.
        res = proc.segment(make_frame(96, 64), "segment the square")
        assert res.instances and proc.pid != first_pid
        events.wait("up", 2)
        assert proc.restarts == 1 and proc.last_failure == str(died.value)
        assert proc.state == "ready"
    finally:
        proc.close()


def test_kill_9_during_decoding_and_while_idle(long_checkpoint):
    events = Events()
    proc = InferenceProcess(spec(long_checkpoint, max_new_tokens=LONG_WORDS + 20,
                                 warmup=False), listener=events)
    proc.start()
    try:
        killed: list[int] = []

        def kill_on_first_token(stage: str, text: str) -> None:
            if stage == "decode" and not killed:
                killed.append(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)

        with pytest.raises(InferenceProcessDied, match=r"signal 9 \(SIGKILL\); restarting"):
            proc.segment(make_frame(96, 64), "segment", progress=kill_on_first_token)
        events.wait("up", 2)
        idle_pid = proc.pid
        assert idle_pid != killed[0]
        os.kill(idle_pid, signal.SIGKILL)  # nobody waiting: still noticed and restarted
        downs = events.wait("down", 2)
        assert downs[1] == ("inference process died: signal 9 (SIGKILL); restarting", True)
        events.wait("up", 3)
        assert proc.segment(make_frame(96, 64), "segment").text.endswith(f"w{LONG_WORDS - 1}")
        assert proc.restarts == 2
    finally:
        proc.close()


# ------------------------------------------------------------------ the process hangs
STALL_S = 5.0
"""The tests' inference_stall_timeout: a tiny model reports far more often (every stage, every
token or at least every second), so only a real hang stays silent this long."""


def test_a_hanging_process_is_killed_answers_its_calls_and_is_restarted(checkpoint):
    """[[hang]] blocks the process for good at the mask stage, silent: the running call and
    the one queued behind it get the stall reason, the process is killed and restarted, and
    the next call is served by the new one."""
    events = Events()
    proc = InferenceProcess(spec(checkpoint, warmup=False), env=fault_env(), listener=events,
                            stall_timeout=STALL_S)
    proc.start()
    try:
        first = psutil.Process(proc.pid)
        errors: list[BaseException] = []

        def call(query: str) -> None:
            try:
                proc.segment(make_frame(96, 64), query)
            except BaseException as exc:
                errors.append(exc)

        decoding = threading.Event()

        def hang() -> None:
            try:
                proc.segment(make_frame(96, 64), "[[hang]] segment the square",
                             progress=lambda stage, _t: stage == "decode" and decoding.set())
            except BaseException as exc:
                errors.append(exc)

        hung = threading.Thread(target=hang)
        hung.start()
        assert decoding.wait(120), "the first call never started decoding"
        queued = threading.Thread(target=call, args=("segment the square",))
        queued.start()
        for thread in (hung, queued):
            thread.join(120)
            assert not thread.is_alive(), "a call to a hung process never returned"
        assert len(errors) == 2
        for exc in errors:
            assert isinstance(exc, InferenceProcessDied)
            assert str(exc).startswith("inference process stalled: no sign of life for ")
            assert str(exc).endswith(f"(inference_stall_timeout {STALL_S:g} s); killed it, "
                                     "restarting")
        ((reason, restarting),) = events.wait("down")
        assert reason == str(errors[0]) and restarting
        first.wait(60)  # killed, not left behind
        res = proc.segment(make_frame(96, 64), "segment the square")
        assert res.instances and proc.pid != first.pid
        assert proc.restarts == 1 and proc.last_failure == reason
    finally:
        proc.close()


def in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``work`` on a thread (a call that might never return must not hang the test); the
    list receives its exception or its result."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def fault(**variables: str) -> dict[str, str]:
    """fault_env with the load and warm-up faults of test/faults/injected_faults.py."""
    return fault_env(dict(os.environ, **variables))


def stall_age(reason: str) -> float:
    """N of "... no sign of life for N s ..."."""
    return float(reason.split("no sign of life for ")[1].split(" s")[0])


def load_stall_reason(thread: threading.Thread, outcome: list, what: str) -> str:
    """The error a call in ``thread`` ended with, once it ends: the stall of a load that hung,
    in the wording the node reports it with."""
    thread.join(180)
    assert not thread.is_alive(), f"{what} never returned"
    (exc,) = outcome
    assert isinstance(exc, EngineError), exc
    reason = str(exc)
    assert reason.startswith("inference process stalled while loading the model: no sign "
                             "of life for "), reason
    assert reason.endswith(f"(inference_stall_timeout {STALL_S:g} s); killed it"), reason
    return reason


def test_a_process_that_hangs_while_loading_is_killed_and_start_fails(checkpoint):
    """The model load blocks for good, silent: after inference_stall_timeout without a sign
    of life the process is killed and start() (the node's activate) fails with the reason,
    instead of waiting for ever."""
    proc = InferenceProcess(spec(checkpoint), env=fault(STAMP_ROS_FAULT_LOAD_HANG="1"),
                            stall_timeout=STALL_S)
    thread, outcome = in_thread(proc.start)
    try:
        reason = load_stall_reason(thread, outcome, "start() for a process hung in loading")
        assert stall_age(reason) >= STALL_S
        assert proc.state == "closed" and proc.failure == reason
        assert not psutil.pid_exists(proc.pid)
    finally:
        proc.close()


def test_a_process_that_hangs_while_warming_up_is_killed_and_restarted(checkpoint, tmp_path):
    """The automatic warm-up after loading blocks for good: the call waiting behind it gets the
    reason, the process is killed and restarted (as for a hang while decoding), and the new
    one warms up and serves."""
    hangs = tmp_path / "warm-up hangs"
    hangs.touch()
    events = Events()
    proc = InferenceProcess(spec(checkpoint), env=fault(STAMP_ROS_FAULT_WARMUP_HANG=str(hangs)),
                            listener=events, stall_timeout=STALL_S)
    proc.start()  # loaded; the warm-up starts now and hangs
    try:
        first = psutil.Process(proc.pid)
        thread, outcome = in_thread(
            lambda: proc.segment(make_frame(96, 64), "segment the square"))
        ((reason, restarting),) = events.wait("down")
        hangs.unlink()  # the replacement warms up normally
        thread.join(120)
        assert not thread.is_alive(), "a call behind a hung warm-up never returned"
        (exc,) = outcome
        assert isinstance(exc, InferenceProcessDied) and str(exc) == reason, exc
        assert reason.startswith("inference process stalled while warming up: no sign of life "
                                 "for "), reason
        assert reason.endswith(f"(inference_stall_timeout {STALL_S:g} s); killed it, "
                               "restarting"), reason
        assert restarting and stall_age(reason) >= STALL_S
        first.wait(60)
        assert events.wait("warm") == [""]
        assert proc.segment(make_frame(96, 64), "segment the square").instances
        assert proc.pid != first.pid and proc.restarts == 1 and proc.last_failure == reason
    finally:
        proc.close()


def test_a_call_waiting_for_a_restart_that_hangs_while_loading_gets_the_reason(checkpoint,
                                                                              tmp_path):
    """The process dies, its replacement hangs while loading: it is killed after
    inference_stall_timeout and not started again (as one that dies while reloading); the call
    that waited for it and every later one get the reason."""
    hangs = tmp_path / "reload hangs"
    events = Events()
    proc = InferenceProcess(spec(checkpoint, warmup=False),
                            env=fault(STAMP_ROS_FAULT_LOAD_HANG=str(hangs)), listener=events,
                            stall_timeout=STALL_S)
    proc.start()
    try:
        hangs.touch()
        with pytest.raises(InferenceProcessDied, match="restarting"):
            proc.segment(make_frame(96, 64), "[[crash]] segment the square")
        thread, outcome = in_thread(
            lambda: proc.segment(make_frame(96, 64), "segment the square"))
        reason = load_stall_reason(thread, outcome, "a call waiting for a hung reload")
        assert events.wait("down", 2)[1] == (reason, False)
        assert proc.state == "failed" and proc.failure == reason
        assert not psutil.pid_exists(proc.pid)  # the hung replacement, killed and reaped
        with pytest.raises(EngineError) as again:
            proc.segment(make_frame(96, 64), "segment the square")
        assert str(again.value) == reason
    finally:
        proc.close()


def test_a_slow_reload_that_shows_signs_of_life_is_not_killed(checkpoint, tmp_path):
    """A replacement that takes three stall timeouts to load but keeps working (here it polls,
    as for another process's download lock) is not taken for a hung one: the call that waited
    for it is answered by it."""
    slow = tmp_path / "reload is slow"
    events = Events()
    proc = InferenceProcess(spec(checkpoint, warmup=False),
                            env=fault(STAMP_ROS_FAULT_LOAD_SLOW=str(slow)), listener=events,
                            stall_timeout=STALL_S)
    proc.start()
    try:
        slow.write_text(str(3 * STALL_S))
        with pytest.raises(InferenceProcessDied, match="restarting"):
            proc.segment(make_frame(96, 64), "[[crash]] segment the square")
        t0 = time.monotonic()
        assert proc.segment(make_frame(96, 64), "segment the square").instances
        assert time.monotonic() - t0 >= 3 * STALL_S  # it did wait for the slow load
        assert [k for k, _ in events.log] == ["up", "down", "up"] and proc.restarts == 1
    finally:
        proc.close()


def test_a_request_without_progress_still_shows_the_process_alive(long_checkpoint):
    """A caller that asked for no progress gets none, but the process still tells the node at
    every stage and while decoding that it is alive (what the stall watch listens to)."""
    from stamp_ros.inference.protocol import Progress

    proc = InferenceProcess(spec(long_checkpoint, max_new_tokens=LONG_WORDS + 20,
                                 warmup=False), stall_timeout=STALL_S)
    heard: list[Any] = []
    dispatch = proc._dispatch
    proc._dispatch = lambda msg: (heard.append(msg), dispatch(msg))  # the real pipe traffic
    proc.start()
    try:
        res = proc.segment(make_frame(96, 64), "segment")
        assert res.text.endswith(f"w{LONG_WORDS - 1}") and proc.restarts == 0
    finally:
        proc.close()
    stages = [m.stage for m in heard if isinstance(m, Progress)]
    assert stages and all(m.text == "" for m in heard if isinstance(m, Progress))
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == \
        ["preprocess", "vision", "prefill", "decode", "mask", "postprocess", "done"]


def test_heartbeats_report_every_stage_and_throttle_decoding():
    from stamp_ros.inference.process import HEARTBEAT_S, heartbeat
    from stamp_ros.inference.protocol import Progress

    sent: list[Any] = []
    beat = heartbeat(sent.append, 7)
    t0 = time.monotonic()
    for stage in ("preprocess", "prefill"):
        beat(stage, "")
    for i in range(2000):
        beat("decode", f"w{i}")
    beat("mask", "the answer")
    elapsed = time.monotonic() - t0
    stages = [m.stage for m in sent]
    assert all(isinstance(m, Progress) and m.rid == 7 and m.text == "" for m in sent)
    assert stages[:3] == ["preprocess", "prefill", "decode"] and stages[-1] == "mask"
    assert stages.count("decode") <= 1 + elapsed / HEARTBEAT_S


def test_a_model_that_cannot_load_is_an_error_and_no_process(tmp_path):
    proc = InferenceProcess(spec(tmp_path / "no-such-model"))
    with pytest.raises(EngineError, match="no-such-model"):
        proc.start()
    assert proc.state == "closed" and not psutil.pid_exists(proc.pid)


def test_close_ends_the_process_and_frees_its_slots(checkpoint):
    proc = InferenceProcess(spec(checkpoint, warmup=False))
    proc.start()
    proc.segment(make_frame(640, 480), "segment the square")
    pid, names = proc.pid, proc._ring.names
    assert all(segment_exists(n) for n in names)
    child = psutil.Process(pid)
    proc.close()
    assert child.wait(30) is not None or not child.is_running()
    assert not any(segment_exists(n) for n in names)
    with pytest.raises(EngineError, match="closed"):
        proc.segment(make_frame(64, 48), "segment")


def test_the_process_ends_when_its_node_dies(checkpoint, tmp_path):
    """The lifeline: a node killed with SIGKILL cannot stop its process; the process notices
    the node's end of the lifeline pipe closing and exits, freeing the model (and GPU)."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, time\n"
        "from stamp_ros.inference import InferenceProcess, LoadSpec\n"
        f"p = InferenceProcess(LoadSpec(model={str(checkpoint)!r}, device='cpu', "
        "warmup=False, threads=1))\n"
        "p.start()\n"
        "print(p.pid, flush=True)\n"
        "sys.stdin.read()\n")
    owner = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=str(REPO),
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        child = psutil.Process(int(owner.stdout.readline()))
        owner.kill()
        owner.wait(30)
        child.wait(60)  # raises TimeoutExpired if the process outlives its node
    finally:
        if owner.poll() is None:
            owner.kill()


# ------------------------------------------------------------------ several processes
def test_thread_budget_leaves_the_node_a_core():
    assert thread_budget(0, 1, cores=16) == 15
    assert thread_budget(0, 2, cores=16) == 7
    assert thread_budget(0, 1, cores=2) == 1
    assert thread_budget(0, 3, cores=2) == 1
    assert thread_budget(6, 2, cores=2) == 6


def test_a_pool_of_two_cpu_processes_serves_concurrent_callers(checkpoint, engine):
    pool = InferencePool(spec(checkpoint, warmup=False, nice=5), ["cpu", "cpu"], threads=0)
    pool.start()
    try:
        assert len(set(pool.pids)) == 2
        expected = thread_budget(0, 2)
        assert all(p.threads == expected for p in pool.processes)
        for pid in pool.pids:  # every thread, torch's included, yields to the node
            assert {psutil.Process(t.id).nice() for t in psutil.Process(pid).threads()} == {5}
        rgb = make_frame(160, 120, seed=9)
        results: dict[int, Any] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, pool.processes[i].segment(rgb, "segment the square"))) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        with torch_threads(expected):  # the pool's automatic budget, whatever the core count
            local = engine.segment(rgb, "segment the square")
        for i in range(2):
            assert_same(results[i], local)
        assert "0: cpu pid" in pool.describe() and "1: cpu pid" in pool.describe()
    finally:
        pool.close()
    assert all(p.state == "closed" for p in pool.processes)


def test_hop_benchmark_reports_what_the_committed_results_hold(tmp_path):
    """``bench/inference_process.py --parts hop`` runs and prints the keys of the results in
    bench/results (the numbers themselves are the benchmark's business, not a test's)."""
    import json

    out = tmp_path / "hop.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "inference_process.py"), "--parts",
                    "hop", "--repeats", "3", "--out", str(out)], check=True, cwd=str(REPO),
                   capture_output=True, timeout=600)
    data = json.loads(out.read_text())
    committed = json.loads((REPO / "bench/results/cpu-inference-process.json").read_text())
    assert set(data["hop"]) == set(committed["hop"])
    for size in ("640x480", "1920x1080"):
        assert set(data["hop"][size]) == set(committed["hop"][size])
        assert data["hop"][size]["hop_ms"]["n"] == 3 and data["hop"][size]["instances"] == 1
        assert data["hop"][size]["hop_ms"]["median"] > 0


def test_the_node_side_never_imports_torch():
    """The node process keeps everything ROS and leaves torch (hundreds of MB, its thread pools)
    to the inference process: importing the node, its entry point, the pipeline, the tracker and
    the proxy loads no torch."""
    code = ("import sys\n"
            "import stamp_ros.cli.run_node, stamp_ros.ros.node, stamp_ros.ros.requests\n"
            "import stamp_ros.ros.tracking, stamp_ros.inference.proxy, stamp_ros.inference.pool\n"
            "loaded = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO), timeout=300)
