"""`StampClient`: a planner's handle on a running stamp node, over its ``~/segment`` action."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from lifecycle_msgs.srv import GetState
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future
from sensor_msgs.msg import Image

from stamp_ros.action import Segment as SegmentAction
from stamp_ros.client.action_client import ThreadSafeActionClient, call_qos, feedback_qos
from stamp_ros.client.errors import StampClientError, StampUnavailable
from stamp_ros.client.result import SegmentFeedback, SegmentResult
from stamp_ros.client.task import SegmentTask, Waiter
from stamp_ros.client.tracking import (
    EventCallback,
    FrameCallback,
    TrackingSession,
    call_track_service,
)
from stamp_ros.ros.kit import rgb_to_image_msg
from stamp_ros.srv import Track

FeedbackCallback = Callable[[SegmentFeedback], None]
READY_POLL_S = 0.2
"""Between two lifecycle-state polls of a node that is up but not active yet."""
PROBE_ATTEMPT_S = 2.0
"""How long wait_until_ready first waits for the answer to one probe call before it sends
another: a fresh client's first calls go unanswered while the node has not yet matched its
readers (DDS discovery). Doubled per attempt up to PROBE_ATTEMPT_MAX_S, for a slow node."""
PROBE_ATTEMPT_MAX_S = 16.0
PROBE_NAME = "__stamp_client_probe__"
"""The conversation (ended, never started) and the camera (unknown) of wait_until_ready's probe
calls: requests every node answers at once, without inferring or changing anything."""


class StampClient:
    """Ask a stamp node to segment what a sentence describes, one call per request or turn.

    ``client = StampClient(node)`` talks to ``/stamp_node`` (``node_name``) through its
    ``~/segment`` action, so every request has feedback (stage, partial answer) and can be
    cancelled. ``node`` is the planner's own rclpy node.

    Results and errors:

    * the node's answer is a :class:`SegmentResult`; when the node answered but inferred
      nothing (no fresh frame, unknown camera, empty query, cancelled, ...) it has
      ``success`` false and ``error`` says why: branch on ``result.ok``;
    * transport problems raise: :class:`StampUnavailable` when the action server is not found
      within ``server_wait`` seconds (or the call's timeout, if shorter),
      :class:`StampTimeout` when no result came within ``timeout`` (the goal is cancelled
      first, so the node stops working on it), :class:`StampClientError` for the rest (goal
      rejected, context shut down). No call waits without a deadline.

    Waiting, two ways:

    * the node is spun by an executor (``node.executor`` is set, e.g. a MultiThreadedExecutor
      spinning in another thread): that executor runs the client's callbacks and a blocking
      call sleeps on a ``threading.Event`` until its future is done. The client's callbacks
      are in their own reentrant callback group, so a blocking call made from a callback of a
      *multi*-threaded executor works; from a callback of a *single*-threaded executor it
      cannot (that thread is the one that would deliver the answer): it ends in StampTimeout,
      use ``segment_async`` with a feedback callback there instead;
    * nobody spins the node: blocking calls (and ``SegmentTask.done()``/``result()``) spin it
      themselves with ``rclpy.spin_until_future_complete`` on an executor of the node's own
      context, which also runs the node's other callbacks meanwhile.
    """

    def __init__(self, node: Any, node_name: str = "/stamp_node", *,
                 server_wait: float = 5.0) -> None:
        name = node_name.rstrip("/")
        if not name:
            raise ValueError("node_name must name the stamp node, e.g. '/stamp_node'")
        self.node = node
        self.node_name = name
        self.action_name = f"{name}/segment"
        self.server_wait = float(server_wait)
        self._group = ReentrantCallbackGroup()
        # Deep request/response queues (CALL_DEPTH) for bursts of calls; see the module
        # docstring of stamp_ros.client.
        self._action = ThreadSafeActionClient(
            node, SegmentAction, self.action_name, callback_group=self._group,
            goal_service_qos_profile=call_qos(), result_service_qos_profile=call_qos(),
            cancel_service_qos_profile=call_qos(), feedback_sub_qos_profile=feedback_qos())
        self._state_client: Any = node.create_client(
            GetState, f"{name}/get_state", qos_profile=call_qos(), callback_group=self._group)
        self._track_client: Any = node.create_client(
            Track, f"{name}/track", qos_profile=call_qos(), callback_group=self._group)
        self._waiter = Waiter(node)

    # ------------------------------------------------------------------ readiness
    def wait_until_ready(self, timeout: float = 120.0) -> None:
        """Return once the node's action server is up, the node is ``active`` (model loaded)
        and the node has answered every channel this client calls it through; raise
        :class:`StampUnavailable` when that takes longer than ``timeout``.

        ``wait_for_server`` only shows that this client sees the node. The node answers a
        client only once it has matched the client's response reader (DDS discovery, a few
        milliseconds, far longer on a loaded machine), and drops answers to one it has not
        matched yet: a fresh client's first call could go unanswered. So this sends probe
        calls the node answers at once without doing anything, again until one is answered:
        ``~/get_state`` (until ``active``), a ``~/segment`` goal that ends a conversation that
        never was (its goal response, feedback, result and a cancel of it) and ``~/track``
        on a camera that does not exist. Afterwards every call of this client reaches the
        node and its answer comes back.
        """
        deadline = time.monotonic() + timeout
        if not self._action.wait_for_server(timeout_sec=max(0.0, timeout)):
            raise StampUnavailable(self._unavailable(timeout))
        label = ""
        while True:
            state = self._call_until_answered(self._state_client, GetState.Request, deadline)
            if state is None:
                raise StampUnavailable(f"{self.node_name} is not active after {timeout:g} s "
                                       f"(lifecycle state: {label or 'unknown'})", state=label)
            label = state.current_state.label
            if label == "active":
                break
            time.sleep(max(0.0, min(READY_POLL_S, deadline - time.monotonic())))
        if not self._probe_action(deadline):
            raise StampUnavailable(f"{self.action_name} did not answer a probe goal (goal "
                                   f"response, feedback, result, cancel) within {timeout:g} s",
                                   state=label)
        if self._call_until_answered(self._track_client, self._track_probe, deadline) is None:
            raise StampUnavailable(f"{self._track_client.srv_name} did not answer within "
                                   f"{timeout:g} s", state=label)

    def _call_until_answered(self, client: Any, request: Callable[[], Any],
                             deadline: float) -> Any:
        """Call the service of ``client`` until one call is answered; the response, or None
        at ``deadline``."""
        attempt = PROBE_ATTEMPT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not client.wait_for_service(timeout_sec=min(left, 1.0)):
                continue
            future = client.call_async(request())
            if self._waiter.wait(future, min(attempt, max(0.0, deadline - time.monotonic()))):
                return future.result()
            client.remove_pending_request(future)  # unanswered (yet): ask again
            attempt = min(2 * attempt, PROBE_ATTEMPT_MAX_S)

    def _probe_action(self, deadline: float) -> bool:
        """Send probe goals until one comes back whole (see wait_until_ready); False at
        ``deadline``."""
        attempt = PROBE_ATTEMPT_S
        while time.monotonic() < deadline:
            if self._probe_action_once(attempt, deadline):
                return True
            attempt = min(2 * attempt, PROBE_ATTEMPT_MAX_S)
        return False

    def _probe_action_once(self, attempt: float, deadline: float) -> bool:
        def answered(future: Any) -> bool:
            return self._waiter.wait(future, min(attempt, max(0.0, deadline - time.monotonic())))

        goal = SegmentAction.Goal()
        goal.conversation = goal.request_id = PROBE_NAME
        goal.end_conversation = True
        fed: Future = Future()
        sent = self._action.send_goal_async(
            goal, feedback_callback=lambda _msg: None if fed.done() else fed.set_result(True))
        if not answered(sent):
            return False
        handle = sent.result()
        if handle is None or not handle.accepted:
            return False
        # The feedback before the result: rclpy drops a goal's feedback that trails its result.
        if not answered(fed) or not answered(handle.get_result_async()):
            return False
        return answered(handle.cancel_goal_async())  # the goal has ended: nothing to cancel

    @staticmethod
    def _track_probe() -> Any:
        request = Track.Request()
        request.query, request.camera = "", PROBE_NAME
        return request

    # ------------------------------------------------------------------ one-shot requests
    def segment(self, query: str, *, camera: str = "", image: Any = None,
                request_id: str = "", timeout: float = 30.0,
                feedback: FeedbackCallback | None = None) -> SegmentResult:
        """Segment what ``query`` describes and wait for the answer (at most ``timeout`` s).

        ``image``: None = the newest fresh frame of ``camera`` ("" = the node's first camera);
        an (H, W, 3) uint8 RGB array (sent as rgb8, stamped now) or a sensor_msgs/Image (sent
        as is; the result carries its header). ``feedback`` is called with every
        :class:`SegmentFeedback`. Raises as described in the class docstring.
        """
        start = time.monotonic()
        task = self.segment_async(query, camera=camera, image=image, request_id=request_id,
                                  feedback=feedback, server_wait=min(self.server_wait, timeout))
        return task.result(max(0.0, timeout - (time.monotonic() - start)))

    def segment_async(self, query: str, *, camera: str = "", image: Any = None,
                      request_id: str = "", feedback: FeedbackCallback | None = None,
                      server_wait: float | None = None) -> SegmentTask:
        """Send the request and return at once with its :class:`SegmentTask` (after waiting at
        most ``server_wait`` seconds, default the client's, for the action server)."""
        return self._send(self._goal(query, camera, image, request_id), feedback, server_wait)

    # ------------------------------------------------------------------ conversations
    def converse(self, conversation: str, query: str, *, new_frame: bool = False,
                 image: Any = None, camera: str = "", request_id: str = "", end: bool = False,
                 timeout: float = 30.0,
                 feedback: FeedbackCallback | None = None) -> SegmentResult:
        """The next turn of ``conversation`` (a name the planner chooses; the node starts it
        on first use). A follow-up is answered on the conversation's frame unless
        ``new_frame`` is set or an ``image`` is given; ``end`` forgets the conversation after
        this turn. The result's ``turn`` numbers the turns from 1."""
        start = time.monotonic()
        task = self.converse_async(conversation, query, new_frame=new_frame, image=image,
                                   camera=camera, request_id=request_id, end=end,
                                   feedback=feedback,
                                   server_wait=min(self.server_wait, timeout))
        return task.result(max(0.0, timeout - (time.monotonic() - start)))

    def converse_async(self, conversation: str, query: str, *, new_frame: bool = False,
                       image: Any = None, camera: str = "", request_id: str = "",
                       end: bool = False, feedback: FeedbackCallback | None = None,
                       server_wait: float | None = None) -> SegmentTask:
        """:meth:`converse` without waiting: the turn's :class:`SegmentTask`."""
        goal = self._goal(query, camera, image, request_id)
        goal.conversation = self._conversation_name(conversation)
        goal.new_frame = bool(new_frame)
        goal.end_conversation = bool(end)
        return self._send(goal, feedback, server_wait)

    def end_conversation(self, conversation: str, timeout: float = 10.0) -> SegmentResult:
        """Forget ``conversation`` on the node. The result's ``turn`` is how many turns it had
        (0: the node did not know it)."""
        start = time.monotonic()
        goal = SegmentAction.Goal()
        goal.conversation = self._conversation_name(conversation)
        goal.end_conversation = True
        task = self._send(goal, None, min(self.server_wait, timeout))
        return task.result(max(0.0, timeout - (time.monotonic() - start)))

    # ------------------------------------------------------------------ tracking
    def track(self, query: str, *, camera: str = "", callback: FrameCallback | None = None,
              on_event: EventCallback | None = None,
              timeout: float = 10.0) -> TrackingSession:
        """Start tracking ``query`` on ``camera`` and return the :class:`TrackingSession`:
        its ``latest`` tracked frame (objects with a stable ``track_id``, masks carried at
        camera rate between the model's answers), ``wait_for_frame()``, and ``callback``
        called for every frame; ``on_event`` for every object that appears, is lost (hidden,
        out of view), returns under its id, or is forgotten (``session.events``, an
        :class:`~stamp_ros.client.object_events.ObjectEvent` each). ``session.stop()`` (or a
        ``with`` block) ends tracking. Calling ``track`` again with the same query continues
        the node's tracks (same ids); another query starts new ones.

        The node must run in continuous mode with ``track:=true``; a node that refuses
        (another mode, unknown camera, empty query, inactive) raises
        :class:`StampClientError` with its reason; no node within ``timeout`` raises
        :class:`StampUnavailable`. One query is tracked per camera: a second ``track`` on the
        same camera replaces the first (whose session then stops receiving frames).
        """
        if not str(query).strip():
            raise ValueError("track() needs a query (use session.stop() to stop tracking)")
        response = call_track_service(self.node, self._track_client, self._waiter, query,
                                      camera, timeout)
        if not response.success:
            raise StampClientError(f"the node refused to track {query!r}: {response.error}")
        return TrackingSession(self.node, self._waiter, self._track_client, query=str(query),
                               camera=str(camera), tracks_topic=response.tracks_topic,
                               callback=callback, on_event=on_event, group=self._group,
                               stop_timeout=timeout)

    # ------------------------------------------------------------------ lifetime
    def destroy(self) -> None:
        """Destroy the client's ROS entities (the node itself stays the caller's)."""
        self._action.destroy()
        for client in (self._state_client, self._track_client):
            if client is not None:
                self.node.destroy_client(client)
        self._state_client = self._track_client = None
        self._waiter.close()

    # ------------------------------------------------------------------ internals
    def _goal(self, query: str, camera: str, image: Any, request_id: str) -> Any:
        goal = SegmentAction.Goal()
        goal.query = str(query)
        goal.camera = str(camera)
        goal.request_id = str(request_id)
        if image is not None:
            goal.image = self._image_msg(image)
        return goal

    def _image_msg(self, image: Any) -> Image:
        if isinstance(image, Image):
            return image
        if isinstance(image, np.ndarray):
            msg = rgb_to_image_msg(image)  # ValueError unless (H, W, 3) uint8
            msg.header.stamp = self.node.get_clock().now().to_msg()
            return msg
        raise TypeError(f"image must be an (H, W, 3) uint8 RGB numpy array or a "
                        f"sensor_msgs/Image, not {type(image).__name__}")

    @staticmethod
    def _conversation_name(conversation: str) -> str:
        name = str(conversation).strip()
        if not name:
            raise ValueError("a conversation needs a non-empty name (use segment() for "
                             "one-shot requests)")
        return name

    def _send(self, goal: Any, feedback: FeedbackCallback | None,
              server_wait: float | None) -> SegmentTask:
        wait = self.server_wait if server_wait is None else server_wait
        if not self._action.server_is_ready() and \
                not self._action.wait_for_server(timeout_sec=max(0.0, wait)):
            raise StampUnavailable(self._unavailable(wait))
        return SegmentTask(self._action, goal, self._waiter, feedback=feedback,
                           logger=self.node.get_logger())

    def _unavailable(self, waited: float) -> str:
        return (f"no action server {self.action_name} after {waited:g} s: is the stamp node "
                f"running, under that name, in this ROS_DOMAIN_ID?")
