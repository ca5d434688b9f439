"""Planner-side client of the stamp node (docs/planner-api.md).

``from stamp_ros.client import StampClient, SegmentResult, StampTimeout, ...``. The result
types and errors import without rclpy; :class:`StampClient`, :class:`SegmentTask` and
:class:`TrackingSession` load rclpy on first use.

Bursts of calls: rclpy's default service QoS keeps 10 requests and 10 responses per client
(KEEP_LAST depth 10) and DDS overwrites the oldest beyond that, so a burst of calls from one
client loses some (16 at once lost 1-6 while camera images flooded the default transports; a
client not spun while the node answered kept only the last 10 answers). :class:`StampClient`'s
service clients and its action client's goal, result and cancel services are reliable,
volatile, KEEP_LAST depth 100 (``CALL_DEPTH``), its feedback reliable KEEP_LAST depth 100
(``FEEDBACK_DEPTH``). With raw rclpy do the same, from ``stamp_ros.client.action_client``:
``node.create_client(..., qos_profile=call_qos())`` and ``ActionClient(...,
goal_service_qos_profile=call_qos(), result_service_qos_profile=call_qos(),
cancel_service_qos_profile=call_qos(), feedback_sub_qos_profile=feedback_qos())``; and call
a fresh client until one call is answered before relying on it, as
:meth:`StampClient.wait_until_ready` does.
"""

from __future__ import annotations

from typing import Any

from stamp_ros.client.errors import (
    StampClientError,
    StampStopped,
    StampTimeout,
    StampUnavailable,
)
from stamp_ros.client.result import SegmentedObject, SegmentFeedback, SegmentResult

__all__ = [
    "SegmentFeedback",
    "SegmentResult",
    "SegmentTask",
    "SegmentedObject",
    "StampClient",
    "StampClientError",
    "StampStopped",
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
