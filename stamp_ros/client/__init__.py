"""Planner-side client of the stamp node (see README, "Planner API").

``from stamp_ros.client import StampClient, SegmentResult, StampTimeout, ...``. The result
types and errors import without rclpy; :class:`StampClient`, :class:`SegmentTask` and
:class:`TrackingSession` load rclpy on first use.
"""

from __future__ import annotations

from typing import Any

from stamp_ros.client.errors import StampClientError, StampTimeout, StampUnavailable
from stamp_ros.client.result import SegmentedObject, SegmentFeedback, SegmentResult

__all__ = [
    "SegmentFeedback",
    "SegmentResult",
    "SegmentTask",
    "SegmentedObject",
    "StampClient",
    "StampClientError",
    "StampTimeout",
    "StampUnavailable",
    "ThreadSafeActionClient",
    "TrackingSession",
]


def __getattr__(name: str) -> Any:
    if name == "StampClient":
        from stamp_ros.client.client import StampClient

        return StampClient
    if name == "SegmentTask":
        from stamp_ros.client.task import SegmentTask

        return SegmentTask
    if name == "ThreadSafeActionClient":
        from stamp_ros.client.action_client import ThreadSafeActionClient

        return ThreadSafeActionClient
    if name == "TrackingSession":
        from stamp_ros.client.tracking import TrackingSession

        return TrackingSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
