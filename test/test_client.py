"""stamp_ros.client.StampClient against the real node in its own process.

The client runs in the test process: on the ros_client fixture's node (spun by an executor in
another thread, so the client waits on events) and on a plain node in a fresh rclpy context
that nobody spins (so the client spins it itself).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node_harness import image_msg, make_frame, node_args, start_node

pytestmark = pytest.mark.ros

ANSWER = "Here <|seg|> and there <|seg|> done"
QUERY = "segment the red square"
STAGES = ("queued", "waiting_for_frame", "convert", "preprocess", "vision", "prefill", "decode",
          "mask", "postprocess", "done")
CALL_TIMEOUT = 120.0
"""Generous: the tiny model answers in well under a second, a loaded CI machine may not."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-client", seed=0,
                                answer=ANSWER)




@pytest.fixture
def client(ros_client):
    from stamp_ros.client import StampClient

    stamp = StampClient(ros_client.node)
    try:
        yield stamp
    finally:
        stamp.destroy()


@pytest.fixture
def plain_node(ros_env, ros_client) -> Iterator[Any]:
    """A planner's node in a fresh context of the test's domain that no executor spins
    (ros_client first: it points the discovery variables at the test's domain)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("planner", context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


class Camera:
    """Publishes one frame on /image every 0.1 s until stopped: a camera, not a timing aid."""

    def __init__(self, ros_client, rgb: np.ndarray, stamp_sec: int) -> None:
        from sensor_msgs.msg import Image

        self._pub = ros_client.publisher(Image, "/image")
        ros_client.wait_for_subscribers(self._pub)
        self._msg = image_msg(rgb, stamp_sec=stamp_sec, frame_id="camera")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._pub.publish(self._msg)
            self._stop.wait(0.1)

    def __enter__(self) -> Camera:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


def by_hand(msg: Any) -> dict:
    """What a planner without the client decodes from a Segmentation message."""
    objects = []
    for inst in msg.instances:
        h, w = inst.mask.height, inst.mask.width
        objects.append({
            "mask": np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(h, w) > 0,
            "box": (inst.x_min, inst.y_min, inst.x_max, inst.y_max),
            "grid": np.frombuffer(bytes(inst.grid), np.uint8).reshape(inst.grid_height,
                                                                      inst.grid_width),
            "logits": np.array(inst.grid_logits, np.float32).reshape(inst.grid_height,
                                                                     inst.grid_width),
            "area": inst.area, "score": inst.score})
    return {"answer": msg.answer, "request_id": msg.request_id, "success": msg.success,
            "stamp": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
            "frame_id": msg.header.frame_id, "total_ms": msg.total_ms, "objects": objects}


def assert_matches(res: Any, expected: dict) -> None:
    assert (res.answer, res.request_id, res.success, res.frame_id) == (
        expected["answer"], expected["request_id"], expected["success"], expected["frame_id"])
    assert res.stamp == pytest.approx(expected["stamp"])
    assert res.timings["total_ms"] == pytest.approx(expected["total_ms"])
    assert len(res.objects) == len(expected["objects"])
    for obj, want in zip(res.objects, expected["objects"], strict=True):
        np.testing.assert_array_equal(obj.mask, want["mask"])
        np.testing.assert_array_equal(obj.grid, want["grid"])
        np.testing.assert_array_equal(obj.grid_logits, want["logits"])
        assert obj.box == (want["box"] if want["area"] else None)
        assert obj.area == want["area"] and obj.score == pytest.approx(want["score"])


def test_segment_inline_image_with_feedback_matches_the_message(
        processes, ros_client, checkpoint, client):
    from ros_client import Collector
    from stamp_ros.msg import Segmentation

    start_node(processes, ros_client, checkpoint)
    results = ros_client.subscribe(Segmentation, "/stamp_node/result")
    client.wait_until_ready(timeout=60)
    feedback = Collector()
    rgb = make_frame(96, 64)
    res = client.segment(QUERY, image=rgb, request_id="inline-1", timeout=CALL_TIMEOUT,
                         feedback=feedback)

    assert res.ok, res.error
    assert res.query == QUERY and res.request_id == "inline-1"
    assert res.conversation == "" and res.turn == 0
    assert res.answer == "Here  and there  done" and len(res.objects) == 2
    for obj in res.objects:
        assert obj.mask.shape == (64, 96) and obj.mask.dtype == np.bool_
        assert obj.grid.shape == res.grid_size and obj.centroid is None
    assert res.union_mask().shape == (64, 96)
    assert res.stamp > 0  # a numpy image is stamped when it is sent
    (raw,) = results.wait_for(1, timeout=60, where=lambda m: m.request_id == "inline-1")
    assert_matches(res, by_hand(raw))

    # Feedback (a topic) may trail the result (a service), and rclpy drops a goal's feedback
    # once its result is in: the stages that arrived came in the node's order.
    stages = [f.stage for f in feedback.messages]
    assert stages and stages[0] == "queued", stages
    order = [STAGES.index(stage) for stage in stages]
    assert order == sorted(order), stages

    # A sensor_msgs/Image goes as is: the result carries its header.
    res = client.segment(QUERY, image=image_msg(rgb, stamp_sec=77, frame_id="inline"),
                         timeout=CALL_TIMEOUT)
    assert res.ok, res.error
    assert res.frame_id == "inline" and res.stamp == pytest.approx(77 + 5678e-9)


def test_segment_camera_frame_and_node_side_errors(processes, ros_client, checkpoint, client):
    from ros_client import Collector

    # frame_timeout 30 s: the request waits for the camera, which starts only once the
    # feedback says so.
    start_node(processes, ros_client, checkpoint, frame_timeout=30.0)
    client.wait_until_ready(timeout=60)
    feedback = Collector()
    task = client.segment_async(QUERY, feedback=feedback)
    feedback.wait_for(1, timeout=60, where=lambda f: f.stage == "waiting_for_frame")
    assert [f.stage for f in feedback.messages] == ["queued", "waiting_for_frame"]
    with Camera(ros_client, make_frame(160, 120, seed=3), stamp_sec=4321):
        res = task.result(timeout=CALL_TIMEOUT)
    assert res.ok, res.error
    assert res.frame_id == "camera" and res.stamp == pytest.approx(4321 + 5678e-9)
    assert [o.mask.shape for o in res.objects] == [(120, 160)] * 2

    # The node answered but could not do it: a result to branch on, not an exception.
    res = client.segment("", image=make_frame(), timeout=CALL_TIMEOUT)
    assert not res.ok and "empty query" in res.error and res.objects == []
    res = client.segment(QUERY, camera="no_such_camera", timeout=CALL_TIMEOUT)
    assert not res.ok and "unknown camera" in res.error and "no_such_camera" in res.error


def test_timeout_cancels_the_goal_and_cancel_ends_a_task(processes, ros_client, checkpoint,
                                                        client):
    from ros_client import Collector
    from stamp_ros.msg import Segmentation

    from stamp_ros.client import StampTimeout

    # No camera frames and a long frame_timeout: a camera request waits until cancelled.
    start_node(processes, ros_client, checkpoint, frame_timeout=30.0)
    results = ros_client.subscribe(Segmentation, "/stamp_node/result")
    client.wait_until_ready(timeout=60)

    with pytest.raises(StampTimeout) as info:
        client.segment(QUERY, request_id="late", timeout=2.0)
    assert info.value.request_id == "late" and len(info.value.goal_id) == 32
    # The node stopped working on it: its result says cancelled (not "no camera frame").
    (late,) = results.wait_for(1, timeout=60, where=lambda m: m.request_id == "late")
    assert not late.success and "cancel" in late.error, late.error

    feedback = Collector()
    task = client.segment_async(QUERY, request_id="withdrawn", feedback=feedback)
    feedback.wait_for(1, timeout=60, where=lambda f: f.stage == "waiting_for_frame")
    assert task.feedback is not None and task.feedback.stage in (
        "queued", "waiting_for_frame")
    task.cancel()
    assert task.wait(60)
    res = task.result(timeout=0)
    assert task.done() and task.cancelled
    assert not res.ok and "cancel" in res.error and res.request_id == "withdrawn"

    # Nothing of the two is left on the node: the next request is answered.
    res = client.segment(QUERY, image=make_frame(), request_id="next", timeout=CALL_TIMEOUT)
    assert res.ok, res.error


def test_unavailable_node_raises_after_a_short_wait(ros_client):
    from stamp_ros.client import StampClient, StampUnavailable

    client = StampClient(ros_client.node, "/no_such_node", server_wait=1.0)
    try:
        with pytest.raises(StampUnavailable, match="/no_such_node/segment"):
            client.segment(QUERY, image=make_frame())
        with pytest.raises(StampUnavailable):
            client.segment_async(QUERY)
        with pytest.raises(StampUnavailable):
            client.wait_until_ready(timeout=1.0)
    finally:
        client.destroy()


def test_client_spins_a_node_nobody_else_spins(processes, ros_client, checkpoint, plain_node):
    from stamp_ros.msg import Segmentation

    from stamp_ros.client import StampClient, StampTimeout

    assert plain_node.executor is None
    node = processes.start(*node_args(checkpoint, frame_timeout=30.0), name="node")
    results = ros_client.subscribe(Segmentation, "/stamp_node/result")
    client = StampClient(plain_node)
    try:
        try:
            client.wait_until_ready(timeout=120)
        except Exception:
            print(processes.output(node)[-4000:])
            raise
        stages: list[str] = []
        res = client.segment(QUERY, image=make_frame(80, 60), request_id="self-1",
                             timeout=CALL_TIMEOUT, feedback=lambda f: stages.append(f.stage))
        assert res.ok, res.error
        assert [o.mask.shape for o in res.objects] == [(60, 80)] * 2
        assert stages and stages[0] == "queued"
        # The answer also came on ~/result: that subscription is matched from here on.
        results.wait_for(1, timeout=CALL_TIMEOUT, where=lambda m: m.request_id == "self-1")

        # Nobody spins the planner's node until the node has written the whole answer: all of
        # its feedback (more than rclpy's default depth of 10) waits in the subscription, and
        # the first stage still reaches the callback.
        early: list[str] = []
        task = client.segment_async(QUERY, image=make_frame(80, 60), request_id="unspun",
                                    feedback=lambda f: early.append(f.stage))
        results.wait_for(1, timeout=CALL_TIMEOUT, where=lambda m: m.request_id == "unspun")
        assert task.result(timeout=CALL_TIMEOUT).ok
        assert early and early[0] == "queued", early

        # Polling done() is what drives the node here.
        task = client.segment_async(QUERY, image=make_frame(80, 60), request_id="self-2")
        done = threading.Event()
        watchdog = threading.Timer(CALL_TIMEOUT, done.set)
        watchdog.start()
        try:
            while not task.done() and not done.is_set():
                done.wait(0.01)
        finally:
            watchdog.cancel()
        assert task.done()
        assert task.result(timeout=0).request_id == "self-2"

        with pytest.raises(StampTimeout):
            client.segment(QUERY, request_id="self-late", timeout=1.0)
        task = client.segment_async(QUERY, request_id="self-cancel")
        task.cancel()
        res = task.result(timeout=60)
        assert not res.ok and "cancel" in res.error and task.cancelled
    finally:
        client.destroy()


def test_converse_three_turns_on_one_frame_then_end(processes, ros_client, checkpoint, client):
    start_node(processes, ros_client, checkpoint)
    client.wait_until_ready(timeout=60)
    frame = image_msg(make_frame(120, 90, seed=5), stamp_sec=55, frame_id="table")

    first = client.converse("kitchen", QUERY, image=frame, timeout=CALL_TIMEOUT)
    assert first.ok, first.error
    assert (first.conversation, first.turn, len(first.objects)) == ("kitchen", 1, 2)
    # Follow-ups send only the sentence and are answered on the conversation's frame; the
    # checkpoint's answer depends on the turns before it (fewer objects once it has answered).
    second = client.converse("kitchen", "now only the one on its left", timeout=CALL_TIMEOUT)
    third = client.converse("kitchen", "and the one above it", timeout=CALL_TIMEOUT)
    for res, turn in ((second, 2), (third, 3)):
        assert res.ok, res.error
        assert (res.conversation, res.turn, res.frame_id) == ("kitchen", turn, "table")
        assert res.stamp == pytest.approx(first.stamp)
        assert len(res.objects) == 1
        assert res.objects[0].mask.shape == (90, 120)

    ended = client.end_conversation("kitchen")
    assert ended.ok and ended.conversation == "kitchen" and ended.turn == 3
    again = client.end_conversation("kitchen")
    assert again.ok and again.turn == 0
    # The name starts a new conversation.
    fresh = client.converse("kitchen", QUERY, image=frame, timeout=CALL_TIMEOUT)
    assert fresh.ok and fresh.turn == 1 and len(fresh.objects) == 2

    with pytest.raises(ValueError):
        client.converse("  ", QUERY)


def test_stop_wakes_a_thread_waiting_for_a_tracked_frame(processes, ros_client, checkpoint,
                                                        client, plain_node):
    """No camera frames, so no tracked frame ever comes: a thread waiting for one with a long
    timeout is woken by stop() at once with StampStopped, on a node an executor spins (the
    wait sleeps on an event) and on one nobody spins (the wait spins it in slices)."""
    from stamp_ros.client import StampClient, StampClientError, StampStopped

    start_node(processes, ros_client, checkpoint, mode="continuous", track=True)
    self_spun = StampClient(plain_node)
    try:
        for stamp in (client, self_spun):
            stamp.wait_until_ready(timeout=CALL_TIMEOUT)
            session = stamp.track(QUERY, timeout=CALL_TIMEOUT)
            outcome: list[BaseException] = []

            def wait(s=session, out=outcome) -> None:
                try:
                    s.wait_for_frame(timeout=3600.0)
                except BaseException as exc:  # the test inspects it
                    out.append(exc)

            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            # The thread is inside wait_for_frame once its frame future exists.
            deadline = time.monotonic() + 60
            while session._next is None and waiter.is_alive():
                assert time.monotonic() < deadline, "wait_for_frame never started waiting"
                time.sleep(0.01)  # polling the session's state, not a synchronisation
            session.stop()
            waiter.join(CALL_TIMEOUT)  # far less than the wait's hour
            assert not waiter.is_alive(), "stop() did not wake wait_for_frame"
            (error,) = outcome
            assert isinstance(error, StampStopped) and isinstance(error, StampClientError)
            assert "stopped" in str(error)
            with pytest.raises(StampStopped):
                session.wait_for_frame(timeout=3600.0)
    finally:
        self_spun.destroy()


def test_wait_until_ready_has_each_call_client_answered(processes, ros_client, checkpoint):
    """wait_for_server only shows that the client sees the node; the node drops answers to
    a client whose readers it has not matched yet. wait_until_ready therefore returns only
    once the node has answered the client: the action's status shows a goal of it that the
    node carried to its end before the client's first real call."""
    from action_msgs.msg import GoalStatus, GoalStatusArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from stamp_ros.client import StampClient

    start_node(processes, ros_client, checkpoint)
    statuses = ros_client.subscribe(
        GoalStatusArray, "/stamp_node/segment/_action/status",
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    stamp = StampClient(ros_client.node)
    try:
        stamp.wait_until_ready(timeout=CALL_TIMEOUT)
        # Status arrays are latched: the latest one comes however late this matched.
        statuses.wait_for(1, timeout=60, where=lambda m: any(
            s.status == GoalStatus.STATUS_SUCCEEDED for s in m.status_list))
        res = stamp.segment(QUERY, image=make_frame(), timeout=CALL_TIMEOUT)
        assert res.ok, res.error
    finally:
        stamp.destroy()


def test_call_clients_keep_deep_request_and_response_queues(ros_client):
    """Every service and action client StampClient calls through keeps CALL_DEPTH requests and
    responses (reliable, keep last), as the client module's docstring tells planners."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

    import stamp_ros.client
    from stamp_ros.client import StampClient
    from stamp_ros.client.action_client import CALL_DEPTH, FEEDBACK_DEPTH

    assert CALL_DEPTH >= 100
    assert f"KEEP_LAST depth {CALL_DEPTH}" in " ".join(stamp_ros.client.__doc__.split())
    stamp = StampClient(ros_client.node)
    try:
        profiles = {f"action {name}": qos for name, qos in stamp._action.qos_profiles.items()}
        assert set(profiles) == {f"action {name}_qos_profile" for name in (
            "goal_service", "result_service", "cancel_service", "feedback_sub", "status_sub")}
        profiles.update({"get_state": stamp._state_client.qos_profile,
                         "track": stamp._track_client.qos_profile})
        for name, qos in profiles.items():
            if name == "action status_sub_qos_profile":
                continue  # latched, depth 1: rclpy's own, the latest status is all there is
            assert qos.history == HistoryPolicy.KEEP_LAST, name
            assert qos.reliability == ReliabilityPolicy.RELIABLE, name
            assert qos.depth == (FEEDBACK_DEPTH if "feedback" in name else CALL_DEPTH), name
            assert qos.durability == DurabilityPolicy.VOLATILE, name
    finally:
        stamp.destroy()


def test_a_burst_of_calls_from_one_unspun_client_is_answered_completely(
        processes, ros_client, checkpoint, plain_node):
    """BURST goals from one StampClient at once while a camera streams, on a planner node
    nobody spins until the node has answered every one: all the goal responses wait in the
    client's response reader at the same time, and none may be overwritten there."""
    from stamp_ros.msg import Segmentation

    from stamp_ros.client import StampClient

    burst = 16
    start_node(processes, ros_client, checkpoint)
    results = ros_client.subscribe(Segmentation, "/stamp_node/result", ros_client.reliable(100))
    stamp = StampClient(plain_node)
    try:
        stamp.wait_until_ready(timeout=CALL_TIMEOUT)
        with Camera(ros_client, make_frame(160, 120, seed=7), stamp_sec=99):
            tasks = [stamp.segment_async(QUERY, request_id=f"burst-{i}") for i in range(burst)]
            results.wait_for(burst, timeout=CALL_TIMEOUT,
                             where=lambda m: m.request_id.startswith("burst-"))
            deadline = time.monotonic() + CALL_TIMEOUT
            for task in tasks:
                task.wait(max(0.0, deadline - time.monotonic()))
        lost = [t.request_id for t in tasks if not t.done()]
        assert not lost, f"{len(lost)} of {burst} calls never answered: {lost}"
        answers = [t.result(timeout=0) for t in tasks]
        assert [a.request_id for a in answers] == [f"burst-{i}" for i in range(burst)]
        for a in answers:  # the node's max_pending 4: the others are refused at once
            assert a.ok or "queue full" in a.error, a.error
        assert any(a.ok for a in answers)
    finally:
        stamp.destroy()
