"""`TrackingSession`: one query tracked by the node, seen from the planner.

:meth:`StampClient.track <stamp_ros.client.StampClient.track>` asks the node (``~/track``
service) to track a query on a camera and subscribes to that camera's ``~/tracks``; the session
keeps the newest tracked frame, calls the planner's callback for every frame, reports objects
that are lost and return (:mod:`~stamp_ros.client.object_events`), and
:meth:`TrackingSession.stop` ends tracking on the node. Objects keep their ``track_id`` from
frame to frame, across model answers, while hidden or out of view for up to the node's
``track_memory`` seconds, and when the same query is sent again.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from stamp_ros.client.errors import (
    StampClientError,
    StampStopped,
    StampTimeout,
    StampUnavailable,
)
from stamp_ros.client.object_events import ObjectEvent, ObjectEvents
from stamp_ros.client.result import SegmentResult
from stamp_ros.client.task import Waiter

FrameCallback = Callable[[SegmentResult], None]
EventCallback = Callable[[ObjectEvent], None]
EVENT_HISTORY = 1000
"""Object events kept in :attr:`TrackingSession.events` (oldest dropped first)."""
TRACKS_DEPTH = 10
"""Tracked frames kept by the subscription for a planner that falls behind (newest win)."""
_STOPPED = object()
"""What stop() completes a pending wait_for_frame's future with."""


def call_track_service(node: Any, client: Any, waiter: Waiter, query: str, camera: str,
                       timeout: float) -> Any:
    """Call ``~/track`` and return its response; raises StampUnavailable when the service does
    not appear within ``timeout``, StampTimeout when it does not answer in time."""
    from stamp_ros.srv import Track

    if not client.wait_for_service(timeout_sec=max(0.0, timeout)):
        raise StampUnavailable(f"no service {client.srv_name} after {timeout:g} s: is the "
                               "stamp node running and configured?")
    request = Track.Request()
    request.query, request.camera = str(query), str(camera)
    future = client.call_async(request)
    if not waiter.wait(future, timeout):
        raise StampTimeout(f"{client.srv_name} did not answer within {timeout:g} s")
    return future.result()


class TrackingSession:
    """The node tracks :attr:`query` on :attr:`camera` while this session is open.

    :attr:`latest` is the newest tracked frame (a :class:`SegmentResult` whose ``objects``
    carry ``track_id``; ``propagated`` and ``model_stamp`` say how fresh the model's grounding
    is), :meth:`wait_for_frame` waits for the next one, ``callback`` (if given) gets every
    frame on the thread that spins the planner's node. :meth:`stop` (or leaving a ``with``
    block) ends tracking on the node and unsubscribes; a thread waiting for a frame then
    raises :class:`~stamp_ros.client.StampStopped` at once.

    Loss and return: :attr:`lost_ids` are the objects the node remembers but does not see on
    the newest frame; :attr:`events` (and ``on_event``, called on the spinning thread) say
    when an object appeared, was lost, returned under its id, or was forgotten.
    """

    def __init__(self, node: Any, waiter: Waiter, service: Any, *, query: str, camera: str,
                 tracks_topic: str, callback: FrameCallback | None, group: Any,
                 on_event: EventCallback | None = None, stop_timeout: float = 10.0) -> None:
        from stamp_ros.msg import Segmentation

        self.node = node
        self.query = query
        self.camera = camera
        self.tracks_topic = tracks_topic
        self.frames = 0
        """Tracked frames received so far."""
        self._waiter = waiter
        self._service = service
        self._callback = callback
        self._on_event = on_event
        self._object_events = ObjectEvents()
        self._events: deque[ObjectEvent] = deque(maxlen=EVENT_HISTORY)
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._latest: SegmentResult | None = None
        self._next: Future | None = None
        self._stopped = False
        self._sub = node.create_subscription(
            Segmentation, tracks_topic, self._on_tracks,
            QoSProfile(depth=TRACKS_DEPTH, reliability=ReliabilityPolicy.RELIABLE),
            callback_group=group)

    def _on_tracks(self, msg: Any) -> None:
        if msg.query != self.query:
            return  # frames of a query tracked before this one
        frame = SegmentResult.from_msg(msg)
        with self._lock:
            self._latest = frame
            self.frames += 1
            waiting, self._next = self._next, None
            events = self._object_events.update((o.track_id for o in frame.objects),
                                                frame.lost_track_ids, frame.stamp)
            self._events.extend(events)
        if waiting is not None and not waiting.done():
            waiting.set_result(frame)
        self._call(self._callback, frame)
        for event in events:
            self._call(self._on_event, event)

    def _call(self, callback: Callable[[Any], None] | None, arg: Any) -> None:
        if callback is None:
            return
        try:
            callback(arg)
        except Exception as exc:  # the planner's bug must not stop its executor
            self.node.get_logger().warning(f"stamp tracking callback raised: {exc!r}")

    @property
    def events(self) -> list[ObjectEvent]:
        """Object events so far, oldest first (the last ``EVENT_HISTORY``)."""
        with self._lock:
            return list(self._events)

    @property
    def lost_ids(self) -> set[int]:
        """Objects the node remembers but does not see on the newest frame."""
        with self._lock:
            return set(self._object_events.lost)

    @property
    def latest(self) -> SegmentResult | None:
        """The newest tracked frame (None before the first arrived)."""
        with self._lock:
            return self._latest

    @property
    def objects(self) -> list:
        """The objects of the newest tracked frame (empty before the first)."""
        latest = self.latest
        return list(latest.objects) if latest is not None else []

    def wait_for_frame(self, timeout: float = 10.0) -> SegmentResult:
        """The next tracked frame to arrive.

        Raises :class:`StampTimeout` after ``timeout`` seconds without one (the node grounds
        tracks only once the model answered once), and :class:`StampStopped` (a
        :class:`StampClientError`) once the session is stopped: at once when it already was,
        and as soon as :meth:`stop` is called, from any thread, while this waits.
        """
        with self._lock:
            if self._stopped:
                raise self._stopped_error()
            if self._next is None:
                self._next = Future()
            future = self._next
        if not self._waiter.wait(future, timeout):
            raise StampTimeout(f"no tracked frame of {self.query!r} on {self.tracks_topic} "
                               f"within {timeout:g} s")
        frame = future.result()
        if frame is _STOPPED:
            raise self._stopped_error()
        return frame

    def _stopped_error(self) -> StampStopped:
        return StampStopped(f"tracking {self.query!r} on {self.tracks_topic} was stopped")

    def stop(self) -> None:
        """End tracking on the node (``~/track`` with an empty query) and unsubscribe. The
        node keeps serving other requests. A :meth:`wait_for_frame` waiting in another thread
        raises :class:`StampStopped` at once, before the node is told. Raises like
        :meth:`StampClient.track` when the node cannot be told; the subscription is removed
        in any case."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            waiting, self._next = self._next, None
        if waiting is not None and not waiting.done():
            waiting.set_result(_STOPPED)
        try:
            response = call_track_service(self.node, self._service, self._waiter, "",
                                          self.camera, self._stop_timeout)
            if not response.success:
                raise StampClientError(f"stopping tracking failed: {response.error}")
        finally:
            self.node.destroy_subscription(self._sub)

    def __enter__(self) -> TrackingSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
