"""Every service and action call is answered, also far beyond capacity, and cancel bites.

The node runs in its own process with a checkpoint that decodes a long answer, so a request
keeps the model busy for a known amount of work (hundreds of decode steps), not for however
long this shared machine happens to need: the queue then really fills up, and a cancel really
lands in the middle of decoding.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from node_harness import (
    image_msg,
    make_frame,
    make_long_answer_checkpoint,
    ready_action_client,
    ready_service_client,
    start_node,
    wait_output,
)

pytestmark = pytest.mark.ros

PEER = str(Path(__file__).resolve().parent / "peers" / "stream_peer.py")
BURST_PEER = str(Path(__file__).resolve().parent / "peers" / "burst_peer.py")
MAX_PENDING = 4
CALLERS = 4 * MAX_PENDING
LONG_WORDS = 400


@pytest.fixture(scope="module")
def busy_checkpoint(tmp_path_factory) -> Path:
    return make_long_answer_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-busy", 120)


@pytest.fixture(scope="module")
def long_checkpoint(tmp_path_factory) -> Path:
    return make_long_answer_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-long",
                                       LONG_WORDS)


def wait_all(futures: list[Any], timeout: float) -> None:
    done = threading.Semaphore(0)
    for future in futures:
        future.add_done_callback(lambda _f: done.release())
    for i in range(len(futures)):
        assert done.acquire(timeout=timeout), f"{len(futures) - i} of {len(futures)} calls " \
            f"never returned within {timeout} s"


def test_burst_of_services_and_actions_beyond_capacity_is_answered_completely(
        processes, ros_client, busy_checkpoint):
    """4x max_pending planners call at the same moment, half through the service and half
    through the action, while a camera streams: every call returns; those refused say the
    queue is full; every accepted one succeeds. Twice, so the node is shown to keep serving."""
    from action_msgs.msg import GoalStatus
    from ros_client import wait_future
    from stamp_ros.action import Segment as SegmentAction
    from stamp_ros.srv import Segment

    node = start_node(processes, ros_client, busy_checkpoint, max_pending=MAX_PENDING,
                      max_new_tokens=200, frame_timeout=30.0, max_frame_age=5.0)
    peer = processes.start(PEER, "--topic", "/image", "--rate", "10", "--width", "640",
                           "--height", "427", "--duration", "600", name="stream")
    # Each client matched both ways (an answer to a client the node has not matched yet is
    # dropped by DDS, and that call would never return).
    services = [ready_service_client(ros_client) for _ in range(CALLERS // 2)]
    actions = [ready_action_client(ros_client) for _ in range(CALLERS // 2)]
    assert peer.poll() is None

    for round_ in range(2):
        service_futures, goal_futures = [], []
        for i, client in enumerate(services):
            req = Segment.Request()
            req.query, req.request_id = "segment the square", f"r{round_}-s{i}"
            service_futures.append(client.call_async(req))
        for i, client in enumerate(actions):
            goal = SegmentAction.Goal()
            goal.query, goal.request_id = "segment the square", f"r{round_}-a{i}"
            goal_futures.append(client.send_goal_async(goal))
        # Like a planner: ask for each goal's result as soon as it is accepted.
        wait_all(goal_futures, timeout=120)
        handles = [f.result() for f in goal_futures]
        assert all(h.accepted for h in handles)
        result_futures = [h.get_result_async() for h in handles]
        wait_all(service_futures + result_futures, timeout=300)

        results = [f.result().result for f in service_futures]
        results += [f.result().result.result for f in result_futures]
        statuses = [f.result().status for f in result_futures]
        assert sorted(r.request_id for r in results) == sorted(
            [f"r{round_}-s{i}" for i in range(CALLERS // 2)]
            + [f"r{round_}-a{i}" for i in range(CALLERS // 2)])
        ok = [r for r in results if r.success]
        refused = [r for r in results if not r.success]
        assert all("queue full" in r.error for r in refused), [r.error for r in refused]
        # max_pending wait (plus the one running, if the worker took it before the burst had
        # arrived): at least max_pending calls were accepted.
        assert len(ok) >= MAX_PENDING, (len(ok), [r.error for r in refused])
        assert refused, "the burst never exceeded the queue: the test did not test capacity"
        assert all(r.header.frame_id == "camera_optical" for r in ok)
        for status, result in zip(statuses, results[CALLERS // 2:], strict=True):
            expected = GoalStatus.STATUS_SUCCEEDED if result.success else GoalStatus.STATUS_ABORTED
            assert status == expected, (status, result.error)
    assert node.poll() is None
    # And a single call afterwards is served normally.
    res = wait_future(services[0].call_async(Segment.Request(query="segment the square")), 120)
    assert res.result.success, res.result.error


@pytest.fixture(scope="module")
def quick_checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-quick",
                                answer="Sure, it is here: <|seg|>")


def test_a_burst_from_a_default_client_is_answered_with_no_dds_profile_set_anywhere(
        processes, ros_client, quick_checkpoint):
    """The node started as ``ros2 run`` starts it, without any profile variable, a 640x427
    camera at 10 Hz, and one plain rclpy client (rclpy's default service QoS) firing 16 calls
    at once: every call returns (served, or refused at once as "queue full"). Without the
    profile on either side, 1-6 of the 16 were lost in transport; the node now loads the
    shipped profile by itself and says so in its log."""
    import json

    from stamp_ros.cli.dds_profile import CHOICE_VARIABLE, PROFILE_VARIABLES

    env = {k: v for k, v in processes.env.items()
           if k not in (*PROFILE_VARIABLES, CHOICE_VARIABLE)}
    node = start_node(processes, ros_client, quick_checkpoint, env=env, frame_timeout=30.0,
                      max_frame_age=5.0)
    log = wait_output(processes, node, "DDS profile: ")
    line = next(x for x in log.splitlines() if "DDS profile: " in x)
    assert "fastdds_large_images.xml (shipped" in line, line
    camera = processes.start(PEER, "--topic", "/image", "--rate", "10", "--width", "640",
                             "--height", "427", "--duration", "600", name="stream", env=env)
    wait_output(processes, camera, "streaming", timeout=120)
    planner = processes.start(BURST_PEER, "--calls", str(CALLERS), "--timeout", "300",
                              name="burst", env=env)
    out = wait_output(processes, planner, "done ", timeout=420)
    report = json.loads(out.split("done ", 1)[1].splitlines()[0])
    assert report["returned"] == CALLERS, report
    assert report["ids"] == sorted(f"burst-{i}" for i in range(CALLERS)), report
    assert report["ok"] >= 1 and all("queue full" in e for e in report["errors"]), report
    assert node.poll() is None


def test_cancel_during_decoding_ends_the_goal_within_a_few_steps(
        processes, ros_client, long_checkpoint):
    """A cancel sent while the answer is being decoded ends the goal as canceled long before
    the answer is complete; a goal cancelled while it waits in the queue ends before the one
    ahead of it; and the next request is served normally."""
    from action_msgs.msg import GoalStatus
    from ros_client import wait_future
    from stamp_ros.action import Segment as SegmentAction

    node = start_node(processes, ros_client, long_checkpoint, max_new_tokens=LONG_WORDS + 50)
    client = ready_action_client(ros_client)

    def goal(stamp_sec: int) -> Any:
        g = SegmentAction.Goal()
        g.query, g.image = "segment the square", image_msg(make_frame(96, 64),
                                                           stamp_sec=stamp_sec)
        return g

    decode_steps: list[str] = []
    decoding = threading.Event()

    def on_feedback(msg: Any) -> None:
        if msg.feedback.stage == "decode":
            decode_steps.append(msg.feedback.partial_answer)
            decoding.set()

    running = wait_future(client.send_goal_async(goal(1), feedback_callback=on_feedback), 60)
    queued = wait_future(client.send_goal_async(goal(2)), 60)
    assert decoding.wait(120), "no decode feedback"
    wait_future(queued.cancel_goal_async(), 30)
    queued_result = wait_future(queued.get_result_async(), 60)
    running_result_future = running.get_result_async()
    assert not running_result_future.done(), "the running goal finished before the queued " \
        "goal's cancel was handled: the queued goal waited for it"
    assert queued_result.status == GoalStatus.STATUS_CANCELED
    assert "cancel" in queued_result.result.result.error

    wait_future(running.cancel_goal_async(), 30)
    running_result = wait_future(running_result_future, 120)
    assert running_result.status == GoalStatus.STATUS_CANCELED, running_result.result.result.error
    assert "cancelled during decoding" in running_result.result.result.error
    assert decode_steps and len(decode_steps) < LONG_WORDS, len(decode_steps)
    assert not decode_steps[-1].startswith(" ".join(f"w{i}" for i in range(LONG_WORDS)))

    # The worker is free again: a complete request succeeds with the whole answer.
    done = wait_future(client.send_goal_async(goal(3)), 60)
    final = wait_future(done.get_result_async(), 300)
    assert final.status == GoalStatus.STATUS_SUCCEEDED, final.result.result.error
    assert final.result.result.answer.endswith(f"w{LONG_WORDS - 1}")
    assert node.poll() is None


def test_a_goal_ends_with_its_result_where_rclpy_takes_one():
    """Newer rclpy sends the result when the goal ends (so it must be given there), older
    rclpy takes no argument: end_goal fits both, and the installed rclpy is one of the two."""
    import inspect

    from rclpy.action.server import ServerGoalHandle

    from stamp_ros.ros.calls import end_goal

    ended: list[tuple[str, Any]] = []

    class Newer:
        def succeed(self, response: Any = None) -> None:
            ended.append(("newer", response))

    class Older:
        def succeed(self) -> None:
            ended.append(("older", None))

    end_goal(Newer().succeed, "the result")
    end_goal(Older().succeed, "the result")
    assert ended == [("newer", "the result"), ("older", None)]
    for end in (ServerGoalHandle.succeed, ServerGoalHandle.abort, ServerGoalHandle.canceled):
        assert list(inspect.signature(end).parameters) in (["self"], ["self", "response"])
