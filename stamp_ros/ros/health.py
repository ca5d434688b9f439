"""What the node reports about itself: the ``stats:`` log line, /diagnostics and ``~/self_test``.

:class:`NodeHealth` builds the statuses (the node's first, as /diagnostics always has it, then
every input and output from :class:`~stamp_ros.ros.input_watch.InputWatch`, then 3D) from one
snapshot of the counters (:class:`~stamp_ros.ros.diagnostics.Stats`), the request queue and the
inference processes; it publishes them every ``stats_period`` and at once when an input's state
changes, and answers ``diagnostic_msgs/SelfTest`` with the same statuses (what
``stamp-ros doctor`` reads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from diagnostic_msgs.srv import SelfTest

from stamp_ros.inference.scheduler import InferenceWorker
from stamp_ros.ros.diagnostics import Stats, diagnostic_array, stats_line, status_3d
from stamp_ros.ros.input_watch import InputWatch
from stamp_ros.ros.model_processes import ModelProcesses

__all__ = ["NodeHealth"]


class NodeHealth:
    """The node's reports (see the module docstring). ``watch`` and ``publisher`` exist while
    the node is configured."""

    def __init__(self, node: Any, param: Callable[[str], Any], stats: Stats,
                 model: ModelProcesses, worker: Callable[[], InferenceWorker | None],
                 down: Callable[[], str | None]) -> None:
        self._node = node
        self._param = param
        self._stats = stats
        self._model = model
        self._worker = worker
        self._down = down
        """Why the node does not serve (inactive, the model failed to load), or None."""
        self.watch: InputWatch | None = None
        self.publisher: Any = None
        self.last_snap: dict[str, Any] | None = None

    def on_timer(self) -> None:
        """Every stats_period: one ``stats:`` log line and one /diagnostics status."""
        # rclpy's MultiThreadedExecutor can run a timer callback twice for one period; a second
        # report covering a few milliseconds would only show zero rates.
        if time.monotonic() - self._stats.since < 0.5 * float(self._param("stats_period")):
            return
        snap = self.snapshot(reset=True)
        self._node.get_logger().info(stats_line(snap))
        self.last_snap = snap
        self.publish()

    def snapshot(self, reset: bool) -> dict[str, Any]:
        snap = self._stats.snapshot(reset=reset)
        worker = self._worker()
        snap["queue_depth"] = worker.depth if worker else 0
        snap["dropped_frames"] = worker.dropped_frames if worker else 0
        snap["rejected_requests"] = worker.rejected if worker else 0
        snap["inference_processes"] = self._model.describe()
        snap["inference_restarts"] = self._model.restarts
        snap["inference_last_failure"] = self._model.last_failure
        return snap

    def statuses(self, snap: dict[str, Any]) -> list[DiagnosticStatus]:
        """The node's status first (as /diagnostics always has it), then inputs, outputs, 3D."""
        name = self._node.get_name()
        down = self._down()
        if down is None and self._model.none_serving():
            down = f"no inference process serves: {self._model.last_failure}"
        arr = diagnostic_array(f"{name}: stamp inference", str(self._param("model")), snap,
                               self._node.get_clock().now().to_msg(), down)
        watch = self.watch
        if watch is None:
            return list(arr.status)
        return [*arr.status, *watch.statuses(name),
                status_3d(f"{name}: 3d", snap, self._stats.last_reasons_3d,
                          watch.depth_in_use())]

    def publish(self) -> None:
        """/diagnostics now: every stats_period, and at once when an input's state changes
        (nothing while stats_period is 0)."""
        if self.publisher is None or float(self._param("stats_period")) <= 0:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self._node.get_clock().now().to_msg()
        arr.status = self.statuses(self.last_snap or self.snapshot(reset=False))
        self.publisher.publish(arr)

    def on_self_test(self, request: SelfTest.Request,
                     response: SelfTest.Response) -> SelfTest.Response:
        """diagnostic_msgs/SelfTest: the same statuses as /diagnostics, on demand (what
        ``stamp-ros doctor`` reads: the inputs with their resolved topics and roles)."""
        statuses = self.statuses(self.snapshot(reset=False))
        response.id = self._node.get_fully_qualified_name()
        response.passed = bytes([all(s.level == DiagnosticStatus.OK for s in statuses)])
        response.status = statuses
        return response
