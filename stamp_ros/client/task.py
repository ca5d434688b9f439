"""Waiting for rclpy futures without hanging, and one goal of the ``~/segment`` action.

:class:`Waiter` is how every blocking call of :class:`~stamp_ros.client.StampClient` waits:

* the node is spun by an executor (``node.executor`` holds it, e.g. a MultiThreadedExecutor
  spinning in another thread): that executor runs the callbacks; the caller sleeps on a
  ``threading.Event`` set by the future's done callback;
* otherwise the caller spins the node itself, on an executor of its own in the node's context,
  with ``rclpy.spin_until_future_complete(node, future, executor, timeout_sec)``, in short
  slices under a lock so that several threads may wait at once.

Either way every wait has a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from action_msgs.msg import GoalStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.task import Future

from stamp_ros.client.errors import StampClientError, StampTimeout
from stamp_ros.client.result import SegmentFeedback, SegmentResult

SPIN_SLICE_S = 0.1
"""Longest single spin of a self-spinning wait: bounds how long a second waiting thread, or a
shut-down context, goes unnoticed."""
ENDED = (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_ABORTED, GoalStatus.STATUS_CANCELED)
CANCEL_WAIT_S = 2.0
"""After a timeout: how long the cancel may take to be sent (goal accepted) and confirmed."""


class Waiter:
    """Waits for rclpy futures of one node, with deadlines (see the module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._executor: SingleThreadedExecutor | None = None
        self._spin_lock = threading.Lock()

    def spun_elsewhere(self) -> bool:
        """True when an executor other than ours has the node (someone else spins it)."""
        executor = self.node.executor
        if executor is None or executor is self._executor:
            return False
        try:
            return self.node in executor.get_nodes()
        except Exception:  # an executor type without get_nodes: trust node.executor
            return True

    def wait(self, future: Any, timeout: float) -> bool:
        """Wait until ``future`` is done or ``timeout`` seconds passed (done: True). Never
        longer; a timeout of 0 still gives the node one non-blocking spin when it is ours."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self.spun_elsewhere():
            event = threading.Event()
            future.add_done_callback(lambda _f: event.set())
            while not future.done():
                self._check_context()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                event.wait(min(left, SPIN_SLICE_S))
            return True
        while True:
            self._check_context()
            left = deadline - time.monotonic()
            if self._spin_lock.acquire(timeout=max(0.0, min(left, SPIN_SLICE_S))):
                try:
                    if not future.done():
                        rclpy.spin_until_future_complete(
                            self.node, future, executor=self._own_executor(),
                            timeout_sec=max(0.0, min(left, SPIN_SLICE_S)))
                finally:
                    self._spin_lock.release()
            if future.done():
                return True
            if time.monotonic() >= deadline:
                return False

    def _own_executor(self) -> SingleThreadedExecutor:
        # The node's own context: the global executor belongs to the default context, which a
        # node of another context cannot be spun in.
        if self._executor is None:
            self._executor = SingleThreadedExecutor(context=self.node.context)
        return self._executor

    def _check_context(self) -> None:
        if not self.node.context.ok():
            raise StampClientError("the rclpy context of the client's node was shut down")

    def close(self) -> None:
        with self._spin_lock:
            if self._executor is not None:
                self._executor.shutdown(timeout_sec=1.0)
                self._executor = None


class SegmentTask:
    """One request in flight (from :meth:`StampClient.segment_async` / ``converse_async``).

    ``done()`` polls, ``result(timeout)`` waits for the :class:`SegmentResult`, ``cancel()``
    asks the node to stop; :attr:`feedback` is the latest :class:`SegmentFeedback` (stage and
    partial answer). A callback given to the client's call receives every feedback, on the
    executor's thread (or, when the client spins the node itself, on the thread waiting in
    ``result()``/``done()``/``wait()``). Feedback travels on a topic and the result on a
    service: rclpy's action client drops a goal's feedback that arrives after its result, so
    the last stages (mask, postprocess) may be missing.
    """

    def __init__(self, action_client: Any, goal: Any, waiter: Waiter, *,
                 feedback: Callable[[SegmentFeedback], None] | None = None,
                 logger: Any = None) -> None:
        self.query = str(goal.query)
        self.request_id = str(goal.request_id)
        self.feedback: SegmentFeedback | None = None
        """The latest feedback (None before the first)."""
        self.status: int | None = None
        """The goal's final ``action_msgs/GoalStatus`` (None until the result is in)."""
        self._waiter = waiter
        self._on_feedback_cb = feedback
        self._logger = logger
        self._lock = threading.Lock()
        self._handle: Any = None
        self._cancel_wanted = False
        self._cancel_future: Any = None
        self._result: SegmentResult | None = None
        self._error: Exception | None = None
        self._goal_answered: Future = Future()
        self._finished: Future = Future()
        send = action_client.send_goal_async(goal, feedback_callback=self._on_feedback)
        send.add_done_callback(self._on_goal_response)

    # ------------------------------------------------------------------ callbacks
    def _on_feedback(self, msg: Any) -> None:
        fb = SegmentFeedback.from_msg(msg)
        self.feedback = fb
        if self._on_feedback_cb is None:
            return
        try:
            self._on_feedback_cb(fb)
        except Exception as exc:  # the planner's bug must not stop the executor
            if self._logger is not None:
                self._logger.warning(f"stamp client feedback callback raised: {exc!r}")

    def _on_goal_response(self, future: Any) -> None:
        try:
            handle = future.result()
        except Exception as exc:
            self._fail(StampClientError(f"sending the goal failed: {exc}"))
            return
        if handle is None or not handle.accepted:
            self._fail(StampClientError(f"the node rejected the goal for {self.query!r}"))
            return
        with self._lock:
            self._handle = handle
            cancel = self._cancel_wanted
        if not self._goal_answered.done():
            self._goal_answered.set_result(True)
        handle.get_result_async().add_done_callback(self._on_result)
        if cancel:
            self._send_cancel()

    def _on_result(self, future: Any) -> None:
        try:
            wrapped = future.result()
            status = int(wrapped.status)
            result = SegmentResult.from_msg(wrapped.result.result)
        except Exception as exc:
            self._fail(StampClientError(f"the result could not be read: {exc}"))
            return
        if status not in ENDED:  # e.g. UNKNOWN: the server no longer knows the goal
            self._fail(StampClientError(f"the node returned no result for {self.query!r} "
                                        f"(goal status {status})"))
            return
        self.status = status
        self._result = result
        if not self._finished.done():
            self._finished.set_result(True)

    def _fail(self, error: Exception) -> None:
        self._error = error
        for future in (self._goal_answered, self._finished):
            if not future.done():
                future.set_result(False)

    def _send_cancel(self) -> None:
        with self._lock:
            if self._cancel_future is not None or self._handle is None:
                return
            self._cancel_future = self._handle.cancel_goal_async()

    # ------------------------------------------------------------------ public
    @property
    def goal_id(self) -> str:
        """The action goal's UUID as hex ("" until the node accepted the goal)."""
        handle = self._handle
        return bytes(handle.goal_id.uuid).hex() if handle is not None else ""

    @property
    def cancelled(self) -> bool:
        """The node ended the goal as cancelled."""
        return self.status == GoalStatus.STATUS_CANCELED

    def done(self) -> bool:
        """True once the result (or a transport error) is in. Does not block; when the client
        spins the node itself, this gives it one non-blocking spin."""
        if not self._finished.done():
            self._waiter.wait(self._finished, 0.0)
        return self._finished.done()

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the result, without cancelling anything;
        True once it is in (then :meth:`result` returns at once)."""
        return self._waiter.wait(self._finished, timeout)

    def cancel(self) -> None:
        """Ask the node to stop working on this request. Returns once the cancel request is
        sent (waiting at most CANCEL_WAIT_S for the node to acknowledge the goal first),
        without waiting for the node to stop. :meth:`result` then gives an error result
        saying it was cancelled, or the answer when the node had already finished."""
        with self._lock:
            self._cancel_wanted = True
        if not self._finished.done():
            self._waiter.wait(self._goal_answered, CANCEL_WAIT_S)
        self._send_cancel()

    def result(self, timeout: float = 30.0) -> SegmentResult:
        """The node's answer; waits at most ``timeout`` seconds.

        Raises :class:`StampTimeout` when nothing came within ``timeout``, after cancelling the
        goal (the node then stops working on it), and :class:`StampClientError` when the goal
        was rejected or the reply could not be read.
        """
        if not self._waiter.wait(self._finished, timeout):
            acknowledged = self._cancel_on_timeout()
            raise StampTimeout(
                f"no result for {self.query!r} within {timeout:g} s; the goal was cancelled"
                + ("" if acknowledged else " (the node did not confirm the cancel in time)"),
                request_id=self.request_id, goal_id=self.goal_id,
                cancel_acknowledged=acknowledged)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _cancel_on_timeout(self) -> bool:
        """Cancel, giving the goal's acceptance and the cancel's reply CANCEL_WAIT_S together."""
        deadline = time.monotonic() + CANCEL_WAIT_S
        with self._lock:
            self._cancel_wanted = True
        self._waiter.wait(self._goal_answered, CANCEL_WAIT_S)
        self._send_cancel()
        cancel_future = self._cancel_future
        if cancel_future is None:
            return False
        if not self._waiter.wait(cancel_future, max(0.0, deadline - time.monotonic())):
            return False
        try:
            return len(cancel_future.result().goals_canceling) > 0 or self._finished.done()
        except Exception:
            return False
