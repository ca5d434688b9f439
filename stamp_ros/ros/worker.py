"""One thread owns the model; requests wait in a bounded queue, continuous frames in one slot.

No rclpy here: the queueing rules (bounded, overflow rejected with a reason, continuous frames
dropped while busy) are tested without ROS. Callbacks never block on the GPU: they only call
:meth:`InferenceWorker.submit` or :meth:`InferenceWorker.offer_continuous`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("stamp_ros.worker")


@dataclass(eq=False)
class Job:
    """One request for the model, whatever interface it came from (compared by identity)."""

    request_id: str
    query: str
    source: str
    """"topic", "service", "action" or "continuous"."""
    asked_at: float
    """time.monotonic() when the request arrived (queue wait counts against max_frame_age)."""
    image_msg: Any = None
    """An inline sensor_msgs Image/CompressedImage; None = use the node's frames."""
    frame: Any = None
    """Continuous mode: the specific cached frame to answer on."""
    done: Callable[[Any], None] | None = None
    """Called exactly once with the Segmentation result, success or not."""
    progress: Callable[[str, str], None] | None = None
    """Action feedback: called with (stage, partial answer) as the request advances."""
    cancelled: Callable[[], bool] | None = None
    """Polled between stages and every few decode steps; True ends the request as cancelled."""
    camera: Any = None
    """The camera (:class:`stamp_ros.ros.camera.Camera`) whose frames and outputs it uses."""
    conversation: str = ""
    """Service/action: the conversation this request is the next turn of ("" = one-shot)."""
    new_frame: bool = False
    """Move the conversation to a new frame (the inline image, else a fresh camera frame)."""
    end_conversation: bool = False
    """Forget the conversation after this request."""
    refusal: str = ""
    """Set when the request is known to be unanswerable before it is queued (e.g. an unknown
    camera): it is answered at once with this reason."""


class InferenceWorker:
    def __init__(
        self,
        handle: Callable[[Job], None],
        reject: Callable[[Job, str], None],
        max_pending: int,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self._handle = handle
        self._on_start = on_start
        self._reject = reject
        self._max_pending = max_pending
        self._queue: deque[Job] = deque()
        self._slots: OrderedDict[str, Job] = OrderedDict()
        self._cond = threading.Condition()
        self._running = True
        self._busy = False
        self.dropped_frames = 0
        self.rejected = 0
        self._thread = threading.Thread(target=self._run, name="stamp-inference", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._slots)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    def submit(self, job: Job) -> bool:
        """Queue a request; when ``max_pending`` are already waiting it is answered at once
        with an error result instead (a robot would rather hear "busy" than wait unboundedly)."""
        with self._cond:
            if self._running and len(self._queue) < self._max_pending:
                self._queue.append(job)
                self._cond.notify()
                return True
            reason = (
                f"queue full: {self._max_pending} requests already waiting (max_pending)"
                if self._running
                else "the node is shutting down or inactive"
            )
            self.rejected += 1
        self._reject(job, reason)
        return False

    def withdraw(self, job: Job) -> bool:
        """Take a still-waiting request out of the queue (an action cancelled before its turn);
        False when it already started or finished. The caller answers it."""
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            return True

    def offer_continuous(self, job: Job, key: str = "") -> None:
        """Continuous mode: keep only the newest frame's job per camera (``key``); an unstarted
        older one is dropped, so a slow model never builds a backlog. Cameras take turns."""
        with self._cond:
            if not self._running:
                return
            if key in self._slots:
                self.dropped_frames += 1
            self._slots[key] = job  # a replaced entry keeps its turn
            self._cond.notify()

    def _next(self) -> Job | None:
        with self._cond:
            while self._running and not self._queue and not self._slots:
                self._cond.wait()
            if not self._running:
                return None
            if self._queue:
                job = self._queue.popleft()
            else:
                _, job = self._slots.popitem(last=False)
            self._busy = True
            return job

    def _run(self) -> None:
        if self._on_start is not None:
            # Runs on the thread that owns the model (e.g. a warm-up inference), so thread-local
            # runtime state (OpenMP teams, CUDA streams) is created once, here, and not in
            # whichever executor thread happened to activate the node.
            try:
                self._on_start()
            except Exception:
                log.exception("worker start-up hook failed")
        while True:
            job = self._next()
            if job is None:
                return
            try:
                self._handle(job)
            except Exception:  # the handler answers its own errors; this is the last guard
                log.exception("inference handler failed for request %s", job.request_id)
            finally:
                with self._cond:
                    self._busy = False

    def stop(self, reason: str = "the node was deactivated", timeout: float = 30.0) -> None:
        """Stop after the current request; every still-waiting request gets an error result."""
        with self._cond:
            self._running = False
            pending = list(self._queue)
            self._queue.clear()
            self._slots.clear()
            self._cond.notify_all()
        for job in pending:
            self._reject(job, reason)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()
