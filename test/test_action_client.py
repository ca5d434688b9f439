"""ThreadSafeActionClient keeps an answer that arrives before its request is recorded.

rclpy's ActionClient sends a request, then records its sequence number; an executor thread
that takes the answer in between drops it and the caller's future never completes
(ros2/rclpy#1123, fixed in newer rclpy only). The race needs a scheduler's bad luck, so the
test makes it certain: the client's rcl handle is wrapped so that, right after a request is
sent and before it is recorded, the sending thread holds until the executor thread either
takes the answer or waits for a lock the sender holds. The same wrapper on rclpy's plain
ActionClient is the control: it loses the answer exactly where that rclpy lacks the fix, so
the test shows the race really happens.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ros

PEER = str(Path(__file__).parent / "peers" / "interface_peer.py")
# How long a send may hold for the executor (it spins every 50 ms): generous for a slow hour.
HOLD_S = 60.0
# A lost answer never arrives: this only bounds how long the control looks for it.
LOST_WAIT_S = 10.0


def rclpy_has_the_fix() -> bool:
    """rclpy's own ActionClient serialises send and take (ros2/rclpy#1308) where it has a lock."""
    from rclpy.action import ActionClient

    return "_lock" in ActionClient.__init__.__code__.co_names


class _Hold:
    """Where the executor thread is, as seen from the client's Waitable methods.

    After a send, the sender holds until the executor either takes the answer (the race
    happens) or has entered a method it cannot finish while the sender holds a lock (the race
    is prevented; holding longer would deadlock the test, not the client)."""

    def __init__(self, kind: str, blocking: set[str]) -> None:
        self.kind, self.blocking = kind, blocking
        self._cond = threading.Condition()
        self._sending = False
        self._released = False

    def entered(self, method: str, kind_ready: bool) -> None:
        with self._cond:
            if self._sending and ((method == "take_data" and kind_ready)
                                  or method in self.blocking):
                self._released = True
                self._cond.notify_all()

    def send(self, send: Any, request: Any) -> Any:
        with self._cond:
            self._sending, self._released = True, False
        sequence_number = send(request)
        with self._cond:
            assert self._cond.wait_for(lambda: self._released, HOLD_S), \
                "the executor never came to take the answer"
            self._sending = False
        return sequence_number


class _HeldHandle:
    """The action client's rcl handle, with ``send_<kind>_request`` going through the hold."""

    def __init__(self, handle: Any, hold: _Hold) -> None:
        self._handle, self._hold = handle, hold

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._handle, name)
        if name != f"send_{self._hold.kind}_request":
            return attr
        return lambda request: self._hold.send(attr, request)


def racing(base: type, kind: str, blocking: set[str]) -> type:
    """``base`` (an ActionClient class) whose ``kind`` requests ('goal' or 'result') are held
    after sending as ``_Hold`` describes; ``blocking``: the Waitable methods that wait for a
    lock the sender holds."""

    class Racing(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.hold = _Hold(kind, blocking)
            self._client_handle = _HeldHandle(self._client_handle, self.hold)

        def get_num_entities(self) -> Any:
            self.hold.entered("get_num_entities", False)
            return super().get_num_entities()

        def add_to_wait_set(self, wait_set: Any) -> None:
            self.hold.entered("add_to_wait_set", False)
            super().add_to_wait_set(wait_set)

        def take_data(self) -> Any:
            ready = self._is_goal_response_ready if kind == "goal" \
                else self._is_result_response_ready
            self.hold.entered("take_data", bool(ready))
            return super().take_data()

    return Racing


def done_within(future: Any, timeout: float) -> bool:
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    return done.wait(timeout)


@pytest.mark.parametrize("kind", ["goal", "result"])
@pytest.mark.parametrize("safe", [True, False], ids=["thread_safe", "rclpy_plain"])
def test_an_answer_taken_before_its_request_is_recorded_still_arrives(
        processes, ros_client, kind, safe):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from stamp_ros.action import Segment as SegmentAction

    from stamp_ros.client import ThreadSafeActionClient

    processes.start(PEER, name="peer")
    # The Waitable methods that wait while a send holds a lock: ours covers take_data,
    # rclpy's (where it has one) also the wait-set calls of the executor's next round.
    blocking = {"take_data"} if safe else set()
    if rclpy_has_the_fix():
        blocking |= {"get_num_entities", "add_to_wait_set", "take_data"}
    base = ThreadSafeActionClient if safe else ActionClient
    client = racing(base, kind, blocking)(ros_client.node, SegmentAction, "segment")
    assert client.wait_for_server(timeout_sec=60), "the peer's action server never appeared"
    expect_lost = not safe and not rclpy_has_the_fix()
    goal = SegmentAction.Goal()
    goal.query = "race"

    sent = client.send_goal_async(goal)  # from this thread; ros_client's thread spins
    if kind == "goal" and expect_lost:
        assert not done_within(sent, LOST_WAIT_S), "rclpy without the fix kept the answer"
        return
    assert done_within(sent, 120), "the goal response never arrived"
    handle = sent.result()
    assert handle.accepted
    # Once the goal has ended (its last status is in) nothing but the result's answer is left
    # to take, so the executor's next take is the one the race is about.
    deadline = time.monotonic() + 120
    while handle.status != GoalStatus.STATUS_SUCCEEDED:
        assert time.monotonic() < deadline, f"the goal never ended (status {handle.status})"
        time.sleep(0.05)
    result = handle.get_result_async()
    if kind == "result" and expect_lost:
        assert not done_within(result, LOST_WAIT_S), "rclpy without the fix kept the answer"
        return
    assert done_within(result, 120), "the result never arrived"
    wrapped = result.result()
    assert wrapped.result.result.query == "race"
    assert wrapped.result.result.answer == "Sure, here is race."


def test_the_qos_it_was_created_with_is_kept(ros_client):
    """rclpy's ActionClient keeps no record of its QoS; ThreadSafeActionClient does: the
    profiles given, and rclpy's defaults for the others (what StampClient's QoS test reads)."""
    from rclpy.qos import HistoryPolicy, qos_profile_services_default
    from stamp_ros.action import Segment as SegmentAction

    from stamp_ros.client.action_client import (
        ACTION_QOS_ARGUMENTS,
        CALL_DEPTH,
        ThreadSafeActionClient,
        call_qos,
    )

    client = ThreadSafeActionClient(ros_client.node, SegmentAction, "segment",
                                    goal_service_qos_profile=call_qos())
    try:
        assert set(client.qos_profiles) == set(ACTION_QOS_ARGUMENTS)
        goal = client.qos_profiles["goal_service_qos_profile"]
        assert (goal.history, goal.depth) == (HistoryPolicy.KEEP_LAST, CALL_DEPTH)
        assert client.qos_profiles["result_service_qos_profile"] == qos_profile_services_default
        assert client.qos_profiles["feedback_sub_qos_profile"].depth == 10  # rclpy's default
    finally:
        client.destroy()
