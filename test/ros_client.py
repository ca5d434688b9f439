"""A planner-like ROS client living in the test process, with its own rclpy context.

The code under test always runs in child processes; this client is the other side of the wire:
it publishes frames and queries, collects results, and calls the service and the action.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy


class Collector:
    """Messages of one subscription, with a blocking wait."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(
        self, count: int = 1, timeout: float = 30.0, where: Callable[[Any], bool] | None = None
    ) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [m for m in self.messages if where is None or where(m)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"got {len(hits)} of {count} messages in {timeout} s")
                self._cond.wait(left)


class RosClient:
    def __init__(self, domain_id: int, name: str = "test_client") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._clients: dict[tuple[type, str], Any] = {}
        self._clients_lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except (ExternalShutdownException, Exception):  # context torn down under us
            pass

    @staticmethod
    def reliable(depth: int = 10) -> QoSProfile:
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)

    def subscribe(self, msg_type: type, topic: str, qos: QoSProfile | None = None) -> Collector:
        collector = Collector()
        self.node.create_subscription(msg_type, topic, collector, qos or self.reliable())
        return collector

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile | None = None):
        return self.node.create_publisher(msg_type, topic, qos or self.reliable())

    def wait_for_subscribers(self, pub, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while pub.get_subscription_count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {pub.topic_name} after {timeout} s")
            time.sleep(0.05)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.node.count_publishers(topic) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no publisher on {topic} after {timeout} s")
            time.sleep(0.05)

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 60.0) -> Any:
        """Call a service through one client per (type, name), kept for the next call: a
        fresh client per call would be a new endpoint each time, and the node drops an answer
        to a client it has not matched yet (the call would never return)."""
        with self._clients_lock:
            client = self._clients.get((srv_type, name))
            if client is None:
                client = self._clients[(srv_type, name)] = self.node.create_client(srv_type,
                                                                                   name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available after {timeout} s")
        return _wait_future(client.call_async(request), timeout)

    def action_client(self, action_type: type, name: str) -> Any:
        """An action client safe to call from the test thread while ``_spin`` takes answers
        (rclpy's own loses answers to that race on Jazzy: see ThreadSafeActionClient)."""
        from stamp_ros.client.action_client import FEEDBACK_DEPTH, ThreadSafeActionClient

        return ThreadSafeActionClient(self.node, action_type, name,
                                      feedback_sub_qos_profile=self.reliable(FEEDBACK_DEPTH))

    def close(self) -> None:
        try:
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.context)
            self._thread.join(timeout=5)


def _wait_future(future: Any, timeout: float) -> Any:
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        raise TimeoutError(f"no answer within {timeout} s")
    return future.result()


def wait_future(future: Any, timeout: float = 60.0) -> Any:
    return _wait_future(future, timeout)
