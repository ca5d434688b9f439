"""One consumer thread per model (inference process); requests wait in one bounded queue,
continuous frames in one slot per camera.

No rclpy here: the queueing rules (bounded, overflow rejected with a reason, continuous frames
dropped while busy, least busy model first, continuous cameras pinned to one model, a model that
went down stops taking work) are tested without ROS. Callbacks never block on the GPU: they only
call :meth:`InferenceWorker.submit` or :meth:`InferenceWorker.offer_continuous`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
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
    segmenter: Any = None
    """The model that runs it (the worker's lane that took it); None: the pipeline's own."""


AFFINITY_MEMORY = 1000
"""Conversations whose last model the worker remembers (least recently used forgotten)."""


class InferenceWorker:
    """The queue in front of the models: one consumer thread per *lane* (a model; the node's
    lanes are its inference processes, see :mod:`stamp_ros.inference`).

    * Requests (:meth:`submit`) wait in one queue of at most ``max_pending``; the first idle
      lane takes the oldest, so the least busy model serves next. A conversation's next turn
      waits for the lane of its previous turn (its frame prefix is cached there) unless that
      lane is busy and another one is idle.
    * Continuous frames (:meth:`offer_continuous`) wait in one slot per camera; each camera is
      pinned to one lane (``pins``, or round robin in order of appearance), so answer reuse and
      tracking stay with one model. Requests go before continuous frames.
    * A lane that goes down (:meth:`lane_down`: its process died) takes nothing until
      :meth:`lane_up`; its continuous frames are dropped, and when no lane is up the waiting
      requests are answered with the reason.
    * ``loading``: every lane starts down while its model loads; requests wait in the queue
      (still bounded) until a lane comes up, or get the load's error from :meth:`stop`.
    """

    def __init__(
        self,
        handle: Callable[[Job], None],
        reject: Callable[[Job, str], None],
        max_pending: int,
        on_start: Callable[[], None] | None = None,
        lanes: Sequence[Any] = (None,),
        pins: Mapping[str, int] | None = None,
        loading: bool = False,
    ) -> None:
        if not lanes:
            raise ValueError("the worker needs at least one lane")
        self._handle = handle
        self._on_start = on_start
        self._reject = reject
        self._max_pending = max_pending
        self._lanes = list(lanes)
        self._queue: deque[Job] = deque()
        self._slots: list[OrderedDict[str, Job]] = [OrderedDict() for _ in self._lanes]
        self._pins: dict[str, int] = {k: v % len(self._lanes) for k, v in (pins or {}).items()}
        self._affinity: OrderedDict[str, int] = OrderedDict()
        self._cond = threading.Condition()
        self._running = True
        self._busy = [False] * len(self._lanes)
        self._up = [not loading] * len(self._lanes)
        self._down_for_good: dict[int, str] = {}
        self.dropped_frames = 0
        self.rejected = 0
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True,
                             name="stamp-inference" if len(self._lanes) == 1
                             else f"stamp-inference-{i}")
            for i in range(len(self._lanes))]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue) + sum(len(s) for s in self._slots)

    @property
    def busy(self) -> bool:
        with self._cond:
            return any(self._busy)

    def pinned_lane(self, key: str) -> int:
        """The lane continuous frames of camera ``key`` run on."""
        with self._cond:
            return self._pin(key)

    def _pin(self, key: str) -> int:
        if key not in self._pins:
            self._pins[key] = len(self._pins) % len(self._lanes)
        return self._pins[key]

    def submit(self, job: Job) -> bool:
        """Queue a request; when ``max_pending`` are already waiting it is answered at once
        with an error result instead (a robot would rather hear "busy" than wait unboundedly)."""
        with self._cond:
            gone = self._all_gone()
            if self._running and not gone and len(self._queue) < self._max_pending:
                self._queue.append(job)
                self._cond.notify_all()
                return True
            if not self._running:
                reason = "the node is shutting down or inactive"
            elif gone:
                reason = gone
            else:
                reason = f"queue full: {self._max_pending} requests already waiting (max_pending)"
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
            lane = self._pin(key)
            slots = self._slots[lane]
            if key in slots or not self._up[lane]:
                self.dropped_frames += 1
            if not self._up[lane]:
                return
            slots[key] = job  # a replaced entry keeps its turn
            self._cond.notify_all()

    # ------------------------------------------------------------------ lanes going down/up
    def lane_down(self, lane: int, reason: str, coming_back: bool = True) -> None:
        """Lane ``lane`` stops taking work (its model process died; ``coming_back``: it is
        being restarted). Its continuous frames are dropped; when no lane is up, every waiting
        request is answered with ``reason``."""
        with self._cond:
            self._up[lane] = False
            if coming_back:
                self._down_for_good.pop(lane, None)
            else:
                self._down_for_good[lane] = reason
            self.dropped_frames += len(self._slots[lane])
            self._slots[lane].clear()
            for conversation in [c for c, i in self._affinity.items() if i == lane]:
                del self._affinity[conversation]
            pending: list[Job] = []
            if not any(self._up):
                pending = list(self._queue)
                self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            self._reject(job, reason)

    def lane_up(self, lane: int) -> None:
        """Lane ``lane`` serves again (its model is loaded)."""
        with self._cond:
            self._up[lane] = True
            self._down_for_good.pop(lane, None)
            self._cond.notify_all()

    def _all_gone(self) -> str:
        """The reason when every lane is down for good ("" otherwise)."""
        if len(self._down_for_good) == len(self._lanes):
            return next(iter(self._down_for_good.values()))
        return ""

    # ------------------------------------------------------------------ consumers
    def _pick(self, lane: int) -> Job | None:
        """The job ``lane`` takes now: a request (oldest first; another lane's conversation
        only while that lane is busy), else its cameras' continuous frames."""
        for job in self._queue:
            other = self._affinity.get(job.conversation) if job.conversation else None
            if other is None or other == lane or not self._up[other] or self._busy[other]:
                self._queue.remove(job)
                if job.conversation:
                    self._affinity[job.conversation] = lane
                    self._affinity.move_to_end(job.conversation)
                    while len(self._affinity) > AFFINITY_MEMORY:
                        self._affinity.popitem(last=False)
                return job
        if self._slots[lane]:
            return self._slots[lane].popitem(last=False)[1]
        return None

    def _next(self, lane: int) -> Job | None:
        with self._cond:
            while True:
                if not self._running:
                    return None
                job = self._pick(lane) if self._up[lane] else None
                if job is not None:
                    self._busy[lane] = True
                    if self._lanes[lane] is not None:
                        job.segmenter = self._lanes[lane]
                    return job
                self._cond.wait()

    def _run(self, lane: int) -> None:
        if self._on_start is not None:
            # Runs on the thread that owns the model (e.g. a warm-up inference), so thread-local
            # runtime state (OpenMP teams, CUDA streams) is created once, here, and not in
            # whichever executor thread happened to activate the node.
            try:
                self._on_start()
            except Exception:
                log.exception("worker start-up hook failed")
        while True:
            job = self._next(lane)
            if job is None:
                return
            try:
                self._handle(job)
            except Exception:  # the handler answers its own errors; this is the last guard
                log.exception("inference handler failed for request %s", job.request_id)
            finally:
                with self._cond:
                    self._busy[lane] = False
                    self._cond.notify_all()  # a conversation may wait for this lane

    def stop(self, reason: str = "the node was deactivated", timeout: float = 30.0) -> None:
        """Stop after the current requests; every still-waiting request gets an error result."""
        with self._cond:
            self._running = False
            pending = list(self._queue)
            self._queue.clear()
            for slots in self._slots:
                slots.clear()
            self._cond.notify_all()
        for job in pending:
            self._reject(job, reason)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if threading.current_thread() is not thread:
                thread.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)
