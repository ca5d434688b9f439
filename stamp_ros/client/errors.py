"""What :class:`stamp_ros.client.StampClient` raises: transport problems, never node answers.

A request the node answered but could not carry out (no fresh frame, unknown camera, empty
query, ...) is a :class:`~stamp_ros.client.result.SegmentResult` with ``success`` false, not an
exception. Every error here is a :class:`StampClientError`.
"""

from __future__ import annotations


class StampClientError(RuntimeError):
    """The request could not be carried over ROS (goal rejected, context shut down, a reply
    that could not be read). Base class of the client's errors."""


class StampUnavailable(StampClientError):
    """The node's action server (or its lifecycle state ``active``, or its answers to
    ``wait_until_ready``'s probe calls) did not appear within the wait. ``state`` is the node's
    last lifecycle state label when it was reachable (e.g. ``"inactive"`` after a model that
    failed to load; ``"active"`` when it never answered a probe), else ""."""

    def __init__(self, message: str, *, state: str = "") -> None:
        super().__init__(message)
        self.state = state


class StampTimeout(StampClientError, TimeoutError):
    """No result within the call's timeout. The goal was cancelled before this was raised
    (``cancel_acknowledged`` says whether the node confirmed it in time)."""

    def __init__(self, message: str, *, request_id: str = "", goal_id: str = "",
                 cancel_acknowledged: bool = False) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.goal_id = goal_id
        self.cancel_acknowledged = cancel_acknowledged


class StampStopped(StampClientError):
    """The tracking session was stopped (:meth:`TrackingSession.stop
    <stamp_ros.client.TrackingSession.stop>` or the end of its ``with`` block): raised by
    ``wait_for_frame`` called afterwards, and at once in a thread that was waiting in it."""
