"""`ThreadSafeActionClient`: rclpy's ActionClient that never loses an answer to a race.

rclpy's ActionClient sends a goal, cancel or result request and only *then* records the
request's sequence number. When an executor spins the node in another thread (the usual
planner setup: a MultiThreadedExecutor in the background, calls from the planner's thread),
the answer can arrive and be taken in between: the client does not know the sequence number,
logs "Ignoring unexpected result response" and the future never completes (ros2/rclpy#1123).
rclpy fixed it with a lock (ros2/rclpy#1308, 2025): the Kilted wheels have the fix, the Jazzy
wheels here (rclpy 7.1.6) and Humble do not. This subclass holds its own lock around sending +
recording and around taking answers, so the same code is safe on every distro (where rclpy
has its own lock too, ours is always taken first, so the two cannot deadlock).
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from stamp_ros.ros.calls import FEEDBACK_DEPTH  # the node's publisher keeps the same

__all__ = ["CALL_DEPTH", "FEEDBACK_DEPTH", "ThreadSafeActionClient", "call_qos", "feedback_qos"]

CALL_DEPTH = 100
"""History depth of a planner's request and response queues for calls to the stamp node (its
service clients, the action client's goal, result and cancel services): with rclpy's default
of 10, a burst of 16 simultaneous calls from one client lost 1-6 of them while camera images
flooded Fast DDS's default transports, and a client not spun while the node answered kept only
the last 10 responses. The node's own request queues are at least this deep
(``request_history_depth``)."""

ACTION_QOS_ARGUMENTS = ("goal_service_qos_profile", "result_service_qos_profile",
                        "cancel_service_qos_profile", "feedback_sub_qos_profile",
                        "status_sub_qos_profile")
"""The QoS keyword arguments of ``rclpy.action.ActionClient`` (the same on Humble to Kilted)."""


def call_qos() -> QoSProfile:
    """The QoS of a planner's service clients and action-client services for the stamp node:
    rclpy's service default (reliable, volatile) with KEEP_LAST depth :data:`CALL_DEPTH`."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=CALL_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def feedback_qos() -> QoSProfile:
    """The QoS of a ``~/segment`` action client's feedback subscription (the node publishes
    with the same): reliable, volatile, KEEP_LAST depth :data:`FEEDBACK_DEPTH`."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=FEEDBACK_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class ThreadSafeActionClient(ActionClient):
    """An ``rclpy.action.ActionClient`` whose requests may be sent from any thread.

    :attr:`qos_profiles` holds the QoS each of its services and subscriptions was created with
    (rclpy's ActionClient does not keep them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._send_take_lock = threading.Lock()
        defaults = inspect.signature(ActionClient.__init__).parameters
        self.qos_profiles: dict[str, QoSProfile] = {
            name: kwargs.get(name, defaults[name].default) for name in ACTION_QOS_ARGUMENTS}
        """Argument name (e.g. ``goal_service_qos_profile``) -> the QoS it was created with."""
        super().__init__(*args, **kwargs)

    def send_goal_async(self, *args: Any, **kwargs: Any) -> Any:
        """Send the goal and record it (and its feedback callback) before any answer is taken."""
        with self._send_take_lock:
            return super().send_goal_async(*args, **kwargs)

    def _cancel_goal_async(self, goal_handle: Any) -> Any:
        """Reached through ``ClientGoalHandle.cancel_goal_async``."""
        with self._send_take_lock:
            return super()._cancel_goal_async(goal_handle)

    def _get_result_async(self, goal_handle: Any) -> Any:
        """Reached through ``ClientGoalHandle.get_result_async``."""
        with self._send_take_lock:
            return super()._get_result_async(goal_handle)

    def take_data(self) -> Any:
        """Called by the executor: answers are taken only between two sends, never inside one."""
        with self._send_take_lock:
            return super().take_data()
