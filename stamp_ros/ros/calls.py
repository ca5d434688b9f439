"""The ``~/segment`` service and action: turn calls into jobs and answer every one of them.

Both callbacks are coroutines: they queue a job and yield their executor thread until the
inference worker answers, so any number of planners can wait at once without parking executor
threads (a blocked thread per call is how calls got lost under load). A call beyond the
worker's capacity is answered at once with a "queue full" error result, never dropped.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import time
from collections.abc import Callable
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from stamp_ros.action import Segment as SegmentAction
from stamp_ros.inference.scheduler import InferenceWorker, Job
from stamp_ros.msg import Segmentation
from stamp_ros.ros.camera import Camera
from stamp_ros.srv import Segment

QUEUE_CANCEL_REASON = "cancelled: cancelled while waiting in the queue"
FEEDBACK_DEPTH = 100
"""History depth of the ~/segment action's feedback on both ends (the node's publisher, a
planner's subscription: :mod:`stamp_ros.client` uses it): one goal sends a feedback per decoded
token plus its stages, and with rclpy's default of 10 a client that is not spun while the node
answers quickly keeps only the last 10, losing the first stages (seen in CI: the first stage a
client saw was 'decode')."""
ACTION_RESULT_TIMEOUT_S = 60
"""How long a finished goal's result stays retrievable (Kilted's default is 10 s, Jazzy's 900 s):
long enough for a slow planner, short enough that results carrying full-size masks do not pile
up in memory."""


def request_history_depth(max_pending: int) -> int:
    """Reader history of the service and action servers: every caller of a burst of several
    times ``max_pending`` simultaneous calls must reach the node (and be answered, if only with
    "queue full"), never be overwritten in the DDS reader before the executor takes it."""
    return max(100, 10 * max_pending)


def end_goal(end: Callable[..., None], result: Any) -> None:
    """Call a goal handle's ``succeed``/``abort``/``canceled`` with the goal's ``result`` where
    rclpy takes one. Newer rclpy (e.g. Jazzy 7.1.9, ros2/rclpy#1598 and #1617) sends the
    result as soon as the goal ends, so ending it without one can answer the planner with an
    empty result before the execute callback returns the real one; older rclpy (the wheels
    here, Humble) takes no argument and sends what the callback returns."""
    if "response" in inspect.signature(end).parameters:
        end(result)
    else:
        end()


class SegmentCalls:
    """Callbacks of the service and the action server of one node."""

    def __init__(self, node: Any, submit: Callable[[Job], None],
                 reject: Callable[[Job, str], None],
                 worker: Callable[[], InferenceWorker | None],
                 end_only: Callable[[Job], Segmentation]) -> None:
        self._node = node
        self._submit = submit
        self._end_only = end_only
        self._reject = reject
        self._worker = worker
        self._request_ids = itertools.count(1)
        self._goal_jobs: dict[bytes, Job] = {}
        self.cameras: dict[str, Camera] = {}
        self.wake: Any = None
        """A guard condition of the node: triggered when a job is answered (see answer())."""

    def create_servers(self, max_pending: int, group: Any) -> tuple[Any, ActionServer]:
        """The ``~/segment`` service and action server, with request queues deep enough for a
        burst of calls (:func:`request_history_depth`) and a feedback queue that keeps a whole
        goal's stages."""
        node = self._node
        calls_qos = QoSProfile(depth=request_history_depth(max_pending),
                               reliability=ReliabilityPolicy.RELIABLE)
        service = node.create_service(Segment, "~/segment", self.on_service,
                                      qos_profile=calls_qos, callback_group=group)
        action = ActionServer(
            node, SegmentAction, "~/segment", self.on_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT, cancel_callback=self.on_cancel,
            callback_group=group, goal_service_qos_profile=calls_qos,
            result_service_qos_profile=calls_qos, cancel_service_qos_profile=calls_qos,
            result_timeout=ACTION_RESULT_TIMEOUT_S,
            feedback_pub_qos_profile=QoSProfile(depth=FEEDBACK_DEPTH,
                                                reliability=ReliabilityPolicy.RELIABLE))
        return service, action

    def job_for(self, request: Any, source: str) -> Job:
        """A Job from a service request or action goal (same fields)."""
        image = request.image if request.image.width and request.image.height else None
        if image is None and len(request.image.data):
            image = request.image  # declared 0x0 but carries data: let conversion reject it
        job = Job(request_id=request.request_id or f"{source[0]}{next(self._request_ids)}",
                  query=request.query, source=source, asked_at=time.monotonic(),
                  image_msg=image, camera=self.camera(request.camera),
                  conversation=request.conversation.strip(), new_frame=request.new_frame,
                  end_conversation=request.end_conversation)
        if job.camera is None:
            job.refusal = (
                f"unknown camera {request.camera!r}: this node serves "
                f"{', '.join(repr(c) for c in self.cameras) or 'no cameras (not configured)'}")
        return job

    def camera(self, name: str) -> Camera | None:
        """The camera a request names; "" is the first (or only) one, as the interface says."""
        name = name.strip("/")
        if not name:
            return next(iter(self.cameras.values()), None)
        return self.cameras.get(name)

    async def answer(self, job: Job) -> Segmentation:
        """Queue ``job`` and yield this executor thread until the worker has answered it."""
        future: Future = Future()
        wake = self.wake

        def done(result: Segmentation) -> None:
            future.set_result(result)
            # An awaiting coroutine is only resumed when the executor's wait set wakes up
            # (ros2/rclpy#1462): wake it now instead of at the next unrelated event.
            if wake is not None:
                with contextlib.suppress(Exception):  # destroyed by a cleanup meanwhile
                    wake.trigger()

        job.done = done
        if job.conversation and job.end_conversation and not job.query.strip():
            done(self._end_only(job))  # nothing to infer: no queue, no frame
        else:
            self._submit(job)
        return await future

    async def on_service(self, request: Segment.Request,
                         response: Segment.Response) -> Segment.Response:
        """A planner's call: answered when the worker is done, success or an error result."""
        response.result = await self.answer(self.job_for(request, "service"))
        return response

    async def on_goal(self, goal_handle: Any) -> SegmentAction.Result:
        """The action: feedback per stage and decoded token; a cancel ends it between stages
        or within a few decode steps, or at once while it still waits in the queue."""
        job = self.job_for(goal_handle.request, "action")
        t0 = time.monotonic()

        def progress(stage: str, text: str) -> None:
            feedback = SegmentAction.Feedback()
            feedback.stage, feedback.partial_answer = stage, text
            feedback.elapsed_ms = (time.monotonic() - t0) * 1000.0
            goal_handle.publish_feedback(feedback)

        job.progress = progress
        job.cancelled = lambda: goal_handle.is_cancel_requested
        key = bytes(goal_handle.goal_id.uuid)
        self._goal_jobs[key] = job
        try:
            progress("queued", "")
            seg = await self.answer(job)
        finally:
            self._goal_jobs.pop(key, None)
        result = SegmentAction.Result(result=seg)
        if goal_handle.is_cancel_requested and not seg.success:
            end_goal(goal_handle.canceled, result)
        elif seg.success:
            end_goal(goal_handle.succeed, result)
        else:
            end_goal(goal_handle.abort, result)
        return result

    def on_cancel(self, goal_handle: Any) -> CancelResponse:
        """Accept every cancel; a goal still waiting in the queue is answered right away."""
        job = self._goal_jobs.get(bytes(goal_handle.goal_id.uuid))
        executor = self._node.executor
        if job is not None and executor is not None:
            # As a task: it must run after the server has marked the goal as canceling, so
            # that the goal's coroutine, once answered, ends it as canceled (not aborted).
            executor.create_task(self._withdraw, goal_handle, job)
        return CancelResponse.ACCEPT

    def _withdraw(self, goal_handle: Any, job: Job) -> None:
        if not goal_handle.is_cancel_requested and goal_handle.is_active:
            self._node.executor.create_task(self._withdraw, goal_handle, job)  # not marked yet
            return
        worker = self._worker()
        if worker is not None and worker.withdraw(job):
            self._reject(job, QUEUE_CANCEL_REASON)
