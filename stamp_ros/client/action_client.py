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

import threading
from typing import Any

from rclpy.action import ActionClient

FEEDBACK_DEPTH = 100
"""History depth of the ~/segment action's feedback on both ends (the node's publisher, the
client's subscription): one goal sends a feedback per decoded token plus its stages, and with
rclpy's default of 10 a client that is not spun while the node answers quickly keeps only the
last 10, losing the first stages (seen in CI: the first stage a client saw was 'decode')."""


class ThreadSafeActionClient(ActionClient):
    """An ``rclpy.action.ActionClient`` whose requests may be sent from any thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._send_take_lock = threading.Lock()
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
