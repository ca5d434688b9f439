"""The node's side of one inference process: the segmenter API, backed by a child process.

:class:`InferenceProcess` has the engine's API (``segment``, ``warmup``, ``history_answer`` and
the live ``max_new_tokens`` / ``mask_upsample`` / ``system_prompt`` attributes) and returns the
same :class:`StampResult`, so the request pipeline does not know where the model runs. It starts
the process, lends each request a shared-memory slot for its frame, streams the process's
progress back to the caller's callback (on the caller's thread, as the engine would), turns the
caller's ``should_cancel`` into the slot's cancel flag, and maps the process's failures back to
the engine's exception types.

When the process dies (a signal, an abort, an exit, the OOM killer) a reader thread notices at
once (its pipe reads end-of-file), tells the listener (the node stops feeding that process and
answers what waits for it), answers every call the process owed with
:class:`InferenceProcessDied` ("inference process died: signal 9 (SIGKILL); restarting"),
and starts a new process with the same :class:`LoadSpec`. Calls made while it loads wait for it.
A process that dies (or fails) while loading is not started again: the listener hears that it
is down for good, with the reason, until the owner closes it and starts anew.

A process that *hangs* (a deadlocked kernel or driver call) would leave its calls waiting for
ever. While it owes an answer it is never silent for long (it sends progress, or a heartbeat
when the caller asked for none, see ``process.heartbeat``), and while it loads the model or
warms up it sends signs of life as long as it is working (``process.LifeSigns``). So when
:attr:`stall_timeout` is set, a watchdog thread kills a process that stays silent that long
while it loads, warms up or owes an answer:

* while loading the model: as if it had died while loading ("inference process stalled while
  loading the model: ...; killed it"): :meth:`InferenceProcess.start` raises with that
  reason, and a replacement that hangs like this is not started again (calls get the reason);
* while warming up or owing an answer: the crash path above answers every call it owed
  ("inference process stalled [while warming up]: ...; killed it, restarting") and restarts it.

A call that finds the process (re)loading waits for it as long as the load shows signs of life,
so with the watchdog on no call waits for a hung load for ever: it gets the reason.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stamp_ros.engine.errors import EngineError, InferenceCancelled, InputError
from stamp_ros.engine.result import SegInstance, StampResult
from stamp_ros.inference.errors import InferenceProcessDied, exit_reason
from stamp_ros.inference.protocol import (
    Alive,
    Failed,
    LiveSettings,
    Loaded,
    LoadFailed,
    LoadSpec,
    Progress,
    SegmentRequest,
    SlotFd,
    Stop,
    WarmedUp,
    WarmupRequest,
)
from stamp_ros.inference.slots import Slot, SlotRing, send_fd

log = logging.getLogger("stamp_ros.inference")

CANCEL_POLL_S = 0.05
"""How often a waiting call asks its ``should_cancel`` between progress messages (a cancel
then reaches the process within this plus the engine's 4 decode steps)."""
STALL_POLL_S = 0.5
"""How often the watchdog checks whether the process has gone silent (``stall_timeout``)."""
LOADING = ("starting", "restarting")
STOP_TIMEOUT_S = 10.0
"""How long :meth:`InferenceProcess.close` lets the process finish before SIGTERM/SIGKILL."""

_ERRORS: dict[str, type[Exception]] = {
    "cancelled": InferenceCancelled, "input": InputError, "engine": EngineError,
    "value": ValueError, "unexpected": EngineError,
}


@dataclass
class ProcessResult(StampResult):
    """A :class:`StampResult` that came from an inference process."""

    history_text: str = ""
    """The answer as a later conversation turn carries it (what ``history_answer`` returns)."""
    hop_ms: float = 0.0
    """What the process hop added: the caller's wall time minus the engine's own."""


class ProcessListener(Protocol):
    """What the owner of an :class:`InferenceProcess` hears about it (from its threads)."""

    def on_down(self, proc: InferenceProcess, reason: str, restarting: bool) -> None:
        """The process ended; ``restarting``: a new one is loading (:meth:`on_up` follows)."""

    def on_up(self, proc: InferenceProcess) -> None:
        """The process (first or restarted) has loaded the model and takes requests."""

    def on_warm(self, proc: InferenceProcess, times_ms: dict[str, float], error: str) -> None:
        """The warm-up after loading finished (``error`` when it failed: only speed is lost)."""


class _Died:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Call:
    def __init__(self, slot: Slot | None) -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.slot = slot


def _package_root() -> str:
    """The directory holding this ``stamp_ros`` (the child must import the same code)."""
    return str(Path(__file__).resolve().parents[2])


class InferenceProcess:
    """One child process that owns one model (see the module docstring)."""

    def __init__(self, spec: LoadSpec, *, label: str = "0",
                 listener: ProcessListener | None = None, slots: int = 2,
                 env: dict[str, str] | None = None, stall_timeout: float = 0.0) -> None:
        self.spec = spec
        self.label = label
        self.listener = listener
        self.max_new_tokens = spec.max_new_tokens
        self.mask_upsample = spec.mask_upsample
        self.system_prompt = spec.system_prompt
        self.stall_timeout = stall_timeout
        """Seconds the process may stay silent while it loads, warms up or owes an answer
        before it is killed (0: never). Live, like the settings above."""
        self._env = env
        self._ring = SlotRing(slots, prefix=f"stamp_ros_{os.getpid()}_{label}")
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._rids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._state = "new"
        self._generation = 0
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._fds_sent: dict[int, str] = {}
        """Slot index -> the segment whose descriptor this connection's process has."""
        self._lifeline = -1
        self._reader: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._load_error = ""
        self._last_heard = time.monotonic()
        self._warming = False
        self._stall_reason = ""
        self.pid: int | None = None
        self.device = spec.device
        self.threads = 0
        self.restarts = 0
        self.last_failure = ""
        self.last_failure_at = 0.0
        """time.monotonic() of :attr:`last_failure`."""
        self.failure = ""
        """Why the process is down for good (state ``failed``)."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def state(self) -> str:
        """``new``, ``starting``, ``ready``, ``restarting``, ``failed`` or ``closed``."""
        with self._cond:
            return self._state

    def start(self, timeout: float | None = None) -> None:
        """Start the process and wait until the model is loaded; raises :class:`EngineError`
        with the reason when it cannot be (the process is then gone): a load that stays silent
        for :attr:`stall_timeout` is killed and fails ("inference process stalled while loading
        the model: ..."), so with the watchdog on this never waits for a hung load."""
        with self._cond:
            if self._state != "new":
                raise RuntimeError(f"inference process {self.label} was already started")
            self._state = "starting"
            self._spawn_locked()
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name=f"stamp-inference-watchdog-{self.label}")
            self._watchdog.start()
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._state == "starting":
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            state, reason = self._state, self.failure
        if state != "ready":
            self.close()
            raise EngineError(reason or (
                f"inference process {self.label} was closed while loading the model"
                if timeout is None else f"the model did not load within {timeout:g} s"))

    def _spawn_locked(self) -> None:
        parent, child = socket.socketpair()
        life_r, life_w = os.pipe()
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        if self.spec.threads > 0:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.spec.threads)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stamp_ros.inference.process", str(child.fileno()),
                 str(life_r)],
                pass_fds=(child.fileno(), life_r), env=env, stdin=subprocess.DEVNULL)
        finally:
            child.close()
            os.close(life_r)
        conn = Connection(parent.detach())
        conn.send(self.spec)
        self._generation += 1
        self._proc, self._conn, self._lifeline = proc, conn, life_w
        self._fds_sent = {}  # a new process: every slot's descriptor goes to it anew
        self._load_error = self._stall_reason = ""
        self._last_heard = time.monotonic()  # the silence that counts starts here
        self._warming = self.spec.warmup
        self.pid = proc.pid
        self._reader = threading.Thread(
            target=self._read, args=(conn, proc, life_w, self._generation), daemon=True,
            name=f"stamp-inference-reader-{self.label}")
        self._reader.start()

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the process (after the request it runs, or cancelling it after ``timeout``) and
        free the slots. Calls still waiting get :class:`InferenceProcessDied`."""
        with self._cond:
            if self._state == "closed":
                return
            self._state = "closed"
            self._cond.notify_all()
            proc, conn, reader = self._proc, self._conn, self._reader
        if proc is not None and conn is not None:
            try:
                with self._send_lock:
                    conn.send(Stop())
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with self._cond:
                    for call in self._calls.values():
                        if call.slot is not None:
                            call.slot.cancel()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
        self._ring.close()

    # ------------------------------------------------------------------ reader thread
    def _read(self, conn: Connection, proc: subprocess.Popen, lifeline: int,
              generation: int) -> None:
        try:
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    break
                self._dispatch(msg)
        finally:
            try:
                code = proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # closed its end but lives on: cannot serve
                proc.kill()
                code = proc.wait()
            conn.close()
            os.close(lifeline)
            self._exited(code, generation)

    def _dispatch(self, msg: Any) -> None:
        self._last_heard = time.monotonic()
        listener = self.listener
        if isinstance(msg, Alive):
            return
        if isinstance(msg, Loaded):
            with self._cond:
                if self._state in ("starting", "restarting"):
                    self._state = "ready"
                self.pid, self.device, self.threads = msg.pid, msg.device, msg.threads
                self._cond.notify_all()
            log.debug("inference process %s (pid %d, %s, %d threads) loaded the model in "
                     "%.1f s", self.label, msg.pid, msg.device, msg.threads, msg.load_s)
            if listener is not None:
                listener.on_up(self)
        elif isinstance(msg, LoadFailed):
            self._load_error = msg.reason
        elif isinstance(msg, WarmedUp) and msg.rid == 0:
            self._warming = False
            if listener is not None:
                listener.on_warm(self, msg.times_ms, msg.error)
        else:
            with self._cond:
                call = self._calls.get(msg.rid)
            if call is not None:
                call.events.put(msg)

    def _exited(self, code: int | None, generation: int) -> None:
        how = exit_reason(code)
        with self._cond:
            if generation != self._generation:
                return
            calls = list(self._calls.values())
            state = self._state
            restarting = False
            if state == "closed":
                reason = "inference process stopped"
            elif state in LOADING:
                reason = self._load_error or self._stall_reason or \
                    f"inference process died while loading the model: {how}"
                self._state, self.failure = "failed", reason
                self.last_failure, self.last_failure_at = reason, time.monotonic()
            else:
                reason = self._stall_reason or f"inference process died: {how}; restarting"
                self._state, restarting = "restarting", True
                self._last_heard = time.monotonic()
                self.restarts += 1
                self.last_failure, self.last_failure_at = reason, time.monotonic()
            self._cond.notify_all()
        if state != "closed":  # the owner reports it (the listener); logged here for debugging
            log.debug("inference process %s (pid %s, %s): %s", self.label, self.pid,
                      self.device, reason)
        # Listener first: the owner stops feeding this process before the calls it owed
        # return, so nothing else is handed to it while it restarts.
        if self.listener is not None:
            self.listener.on_down(self, reason, restarting)
        for call in calls:
            call.events.put(_Died(reason))
        if restarting:
            failed = self._respawn()
            if failed and self.listener is not None:
                self.listener.on_down(self, failed, False)

    def _respawn(self) -> str:
        """Start the replacement process; the reason when even that fails."""
        with self._cond:
            if self._state != "restarting":  # closed meanwhile
                return ""
            try:
                self._spawn_locked()
            except Exception as exc:
                self._state = "failed"
                self.failure = self.last_failure = f"could not restart the inference " \
                    f"process: {exc}"
                self.last_failure_at = time.monotonic()
                self._cond.notify_all()
                return self.failure
            return ""

    # ------------------------------------------------------------------ the engine API
    def segment(
        self,
        image: np.ndarray,
        query: str,
        history: Sequence[tuple[str, str]] | None = None,
        *,
        progress: Callable[[str, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        forced_answer_ids: Sequence[int] | None = None,
        path: str | None = None,
        frame_key: Hashable | None = None,
        image_in_first_turn: bool = False,
    ) -> StampResult:
        """``StampSegmenter.segment`` in the process (see there); additionally raises
        :class:`InferenceProcessDied` when the process ends before it answered."""
        t0 = time.perf_counter()
        standard = (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                    and image.dtype == np.uint8 and image.size > 0)
        self._refuse_if_down()
        try:
            slot = self._ring.acquire()
        except RuntimeError:  # closed meanwhile
            self._refuse_if_down()
            raise
        try:
            if standard:
                slot.write_frame(image)
            else:  # let the engine judge it, with its own words
                slot.shm.buf[0] = 0
            req = SegmentRequest(
                rid=next(self._rids), slot=slot.ref,
                shape=tuple(image.shape[:2]) if standard else (0, 0), query=query,
                settings=LiveSettings(int(self.max_new_tokens), str(self.mask_upsample),
                                      self.system_prompt),
                history=[tuple(turn) for turn in history] if history else None,
                forced_answer_ids=None if forced_answer_ids is None
                else [int(i) for i in forced_answer_ids],
                image_in_first_turn=image_in_first_turn, frame_key=frame_key, path=path,
                progress=progress is not None, inline_image=None if standard else image)
            done = self._call(req, slot, progress, should_cancel)
            masks = slot.read_masks(done.masks)
        finally:
            self._ring.release(slot)
        instances = [SegInstance(grid=m.grid, logits=m.logits, mask=mask, bbox=m.bbox,
                                 area=m.area, score=m.score)
                     for m, mask in zip(done.instances, masks, strict=True)]
        return ProcessResult(
            text=done.text, instances=instances, image_size=done.image_size,
            grid_size=done.grid_size, timings_ms=done.timings_ms, token_ids=done.token_ids,
            history_text=done.history_text,
            hop_ms=(time.perf_counter() - t0) * 1000.0 - done.engine_ms)

    def warmup(self, size_hw: tuple[int, int] = (64, 64)) -> dict[str, float]:
        """``StampSegmenter.warmup`` in the process (it also warms up by itself after every
        load, see :attr:`LoadSpec.warmup`)."""
        done = self._call(WarmupRequest(next(self._rids), tuple(size_hw)), None, None, None)
        if done.error:
            raise EngineError(done.error)
        return done.times_ms

    def history_answer(self, result: StampResult) -> str:
        """The answer of ``result`` as a later turn carries it (computed by the process)."""
        if not isinstance(result, ProcessResult):
            raise TypeError("history_answer needs a result of this inference process")
        return result.history_text

    def _refuse_if_down(self) -> None:
        with self._cond:
            self._refuse_if_down_locked()

    def _refuse_if_down_locked(self) -> None:
        if self._state in ("failed", "closed", "new"):
            raise EngineError(self.failure or f"inference process {self.label} is "
                              f"{'not started' if self._state == 'new' else self._state}")

    def _call(self, req: Any, slot: Slot | None, progress: Callable[[str, str], None] | None,
              should_cancel: Callable[[], bool] | None) -> Any:
        call = _Call(slot)
        if slot is not None and should_cancel is not None and should_cancel():
            slot.cancel()  # the process stops at its first check, as the engine would
        with self._cond:
            self._await_load_locked()
            self._refuse_if_down_locked()
            if not self._calls and not self._warming:  # idle until now: silence counts now
                self._last_heard = time.monotonic()
            self._calls[req.rid] = call
            conn, fds_sent = self._conn, self._fds_sent
        try:
            try:
                with self._send_lock:
                    if slot is not None and slot.ref.fd and \
                            fds_sent.get(slot.index) != slot.ref.name:
                        conn.send(SlotFd(slot.ref))  # the descriptor follows at once
                        send_fd(conn, slot.fd)
                        fds_sent[slot.index] = slot.ref.name
                    conn.send(req)
            except OSError:
                pass  # it just died: the reader answers this call
            return self._wait(call, progress, should_cancel)
        finally:
            with self._cond:
                self._calls.pop(req.rid, None)

    def _wait(self, call: _Call, progress: Callable[[str, str], None] | None,
              should_cancel: Callable[[], bool] | None) -> Any:
        raised: BaseException | None = None
        cancel_sent = False
        while True:
            poll = CANCEL_POLL_S if should_cancel is not None else None
            try:
                event = call.events.get(timeout=poll)
            except queue.Empty:
                event = None
            if isinstance(event, Progress) and progress is not None and raised is None:
                try:
                    progress(event.stage, event.text)
                except BaseException as exc:  # as in the engine: the request ends with it
                    raised = exc
                    if call.slot is not None:
                        call.slot.cancel()
            if event is None or isinstance(event, Progress):
                if (not cancel_sent and should_cancel is not None and call.slot is not None
                        and should_cancel()):
                    call.slot.cancel()
                    cancel_sent = True
                continue
            if isinstance(event, _Died):
                raise InferenceProcessDied(event.reason)
            if raised is not None:
                raise raised
            if isinstance(event, Failed):
                raise _ERRORS.get(event.kind, EngineError)(event.message)
            return event  # Done or WarmedUp

    # ------------------------------------------------------------------ the watchdog
    def _await_load_locked(self) -> None:
        """Wait (holding ``_cond``) while the process (re)loads, until it is ready or down: as
        long as the load shows signs of life; the watchdog kills one silent for
        :attr:`stall_timeout`, and the reader thread then sets the reason."""
        while self._state in LOADING:
            self._cond.wait()

    def _watch(self) -> None:
        """The watchdog thread: every :data:`STALL_POLL_S`, kill the process when it has been
        silent for :attr:`stall_timeout` while it loads, warms up or owes an answer (the reader
        thread then reports it: see :meth:`_exited`)."""
        with self._cond:
            while self._state != "closed":
                self._cond.wait(STALL_POLL_S)
                proc = self._stalled_locked()
                if proc is not None:
                    log.debug("inference process %s (pid %s): %s", self.label, proc.pid,
                              self._stall_reason)
                    proc.kill()

    def _stalled_locked(self) -> subprocess.Popen | None:
        """The process to kill (its reason set) when it has been silent for
        :attr:`stall_timeout` while loading, warming up or owing an answer; else None."""
        limit = float(self.stall_timeout)
        if limit <= 0 or self._stall_reason or self._proc is None:
            return None
        if self._state in LOADING:
            doing, then = " while loading the model", ""
        elif self._state == "ready" and self._warming:
            doing, then = " while warming up", ", restarting"
        elif self._state == "ready" and self._calls:
            doing, then = "", ", restarting"
        else:
            return None
        silent = time.monotonic() - self._last_heard
        if silent < limit:
            return None
        self._stall_reason = (
            f"inference process stalled{doing}: no sign of life for {silent:.0f} s "
            f"(inference_stall_timeout {limit:g} s); killed it{then}")
        return self._proc
