"""The stamp_ros node in its own process, driven over real ROS 2 by a planner-like client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from node_harness import (
    image_msg,
    make_frame,
    make_long_answer_checkpoint,
    ready_action_client,
    start_node,
    wait_output,
)
from thread_budget import NODE_THREADS, with_threads

pytestmark = pytest.mark.ros

ANSWER = "Sure, it is here: <|seg|>"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-tiny", seed=0,
                                answer=ANSWER)




def subscribe_outputs(client):
    from sensor_msgs.msg import Image
    from stamp_ros.msg import Segmentation
    from std_msgs.msg import String

    return (client.subscribe(Segmentation, "/stamp_node/result"),
            client.subscribe(String, "/stamp_node/answer"),
            client.subscribe(Image, "/stamp_node/mask"))


def publish_frame(client, pub, rgb, **header):
    msg = image_msg(rgb, **header)
    pub.publish(msg)
    return msg


def test_query_topic_gives_result_answer_and_mask_matching_offline_cli(
        processes, ros_client, checkpoint, tmp_path):
    from PIL import Image as PILImage
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    node = start_node(processes, ros_client, checkpoint)
    results, answers, masks = subscribe_outputs(ros_client)
    img_pub = ros_client.publisher(Image, "/image")
    query_pub = ros_client.publisher(String, "/query")
    ros_client.wait_for_subscribers(img_pub)
    ros_client.wait_for_subscribers(query_pub)
    rgb = make_frame(200, 150)
    publish_frame(ros_client, img_pub, rgb, stamp_sec=1234, stamp_nanosec=5678)
    # Should the query overtake the frame, it waits for it (frame_timeout).
    query_pub.publish(String(data="Please segment the red square."))

    (res,) = results.wait_for(1, timeout=60)
    assert res.success, res.error
    assert (res.header.stamp.sec, res.header.stamp.nanosec, res.header.frame_id) == (
        1234, 5678, "cam")
    assert res.query == "Please segment the red square." and res.request_id.startswith("q")
    assert res.answer == "Sure, it is here:" or res.answer.startswith("Sure, it is here")
    assert answers.wait_for(1)[0].data == res.answer
    (mask,) = masks.wait_for(1)
    assert (mask.width, mask.height, mask.encoding) == (200, 150, "mono8")
    assert mask.header == res.header
    assert len(res.instances) == 1
    inst = res.instances[0]
    assert (inst.mask.width, inst.mask.height) == (200, 150)
    for name in ("preprocess_ms", "generate_ms", "mask_ms", "total_ms"):
        assert getattr(res, name) > 0, name

    # the same image, query and checkpoint through the offline CLI give the same grids (at the
    # node's thread budget: a different one may move a logit's last bit, see thread_budget.py)
    path = tmp_path / "frame.png"
    PILImage.fromarray(rgb).save(path)
    out = subprocess.run(
        [sys.executable, "-m", "stamp_ros.cli", "segment", "--model", str(checkpoint),
         "--image", str(path), "--query", "Please segment the red square.", "--device", "cpu",
         "--min-pixels", str(16 * 28 * 28), "--max-pixels", str(16 * 28 * 28), "--json"],
        capture_output=True, text=True, timeout=300, env=with_threads(processes.env, NODE_THREADS))
    assert out.returncode == 0, out.stderr[-3000:]
    offline = json.loads(out.stdout)
    assert offline["text"] == res.answer
    assert len(offline["instances"]) == len(res.instances)
    for off, inst in zip(offline["instances"], res.instances, strict=True):
        grid = np.frombuffer(bytes(inst.grid), np.uint8).reshape(inst.grid_height,
                                                                 inst.grid_width)
        np.testing.assert_array_equal(grid, np.array(off["grid"], np.uint8))
        assert off["area"] == inst.area
        assert off["bbox"] == [inst.x_min, inst.y_min, inst.x_max, inst.y_max]
    union = np.frombuffer(bytes(mask.data), np.uint8).reshape(150, 200)
    inst_mask = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(150, 200)
    np.testing.assert_array_equal(union, inst_mask)
    assert int((union > 0).sum()) == inst.area
    assert node.poll() is None


def test_service_and_action_with_inline_image(processes, ros_client, checkpoint):
    from ros_client import wait_future
    from stamp_ros.action import Segment as SegmentAction
    from stamp_ros.srv import Segment

    start_node(processes, ros_client, checkpoint)
    req = Segment.Request()
    req.query, req.request_id = "segment the square", "svc-1"
    req.image = image_msg(make_frame(96, 64), stamp_sec=77, frame_id="inline")
    res = ros_client.call(Segment, "/stamp_node/segment", req, timeout=120).result
    assert res.success, res.error
    assert res.request_id == "svc-1" and res.header.frame_id == "inline"
    assert res.header.stamp.sec == 77 and res.instances[0].mask.width == 96

    # Matched both ways: a goal sent before the node matched this client's readers loses its
    # first feedback (the "queued" stage) or even its goal response.
    client = ready_action_client(ros_client)
    from ros_client import Collector

    feedback = Collector()
    goal = SegmentAction.Goal()
    goal.query, goal.image = "segment the square", image_msg(make_frame(96, 64), stamp_sec=78)
    handle = wait_future(client.send_goal_async(goal, feedback_callback=feedback), 30)
    # rclpy's action client drops a goal's feedback callback once its result has arrived, and
    # feedback (a topic) may trail the result (a service): ask for the result only after the
    # last stage's feedback is in.
    feedback.wait_for(1, timeout=120, where=lambda f: f.feedback.stage == "mask")
    wrapped = wait_future(handle.get_result_async(), 120)
    assert wrapped.result.result.success, wrapped.result.result.error
    assert wrapped.result.result.header.stamp.sec == 78
    feedback = feedback.messages
    stages = [f.feedback.stage for f in feedback]
    assert stages[0] == "queued" and "decode" in stages and "mask" in stages, stages
    assert stages.index("decode") < stages.index("mask")
    assert any(f.feedback.partial_answer for f in feedback)


def test_action_cancel_is_honoured(processes, ros_client, checkpoint):
    from action_msgs.msg import GoalStatus
    from ros_client import wait_future
    from stamp_ros.action import Segment as SegmentAction

    # No camera frames: the goal waits for a frame, and a cancel must end it early.
    start_node(processes, ros_client, checkpoint, frame_timeout=30.0)
    # Matched both ways: a goal sent before the node matched this client's readers loses its
    # first feedback (the "queued" stage) or even its goal response.
    client = ready_action_client(ros_client)
    from ros_client import Collector

    goal = SegmentAction.Goal()
    goal.query = "segment the square"
    feedback = Collector()
    handle = wait_future(client.send_goal_async(goal, feedback_callback=feedback), 30)
    feedback.wait_for(1, timeout=60, where=lambda f: f.feedback.stage == "waiting_for_frame")
    t0 = time.monotonic()
    wait_future(handle.cancel_goal_async(), 30)
    wrapped = wait_future(handle.get_result_async(), 30)
    assert time.monotonic() - t0 < 15, "the goal ran into frame_timeout (30 s): cancel ignored"
    assert wrapped.status == GoalStatus.STATUS_CANCELED
    assert not wrapped.result.result.success and "cancel" in wrapped.result.result.error


def test_once_mode_honours_frame_timeout_and_max_frame_age(processes, ros_client, checkpoint):
    from sensor_msgs.msg import Image
    from stamp_ros.srv import Segment

    start_node(processes, ros_client, checkpoint, frame_timeout=0.5, max_frame_age=0.5)
    req = Segment.Request()
    req.query = "segment the square"
    t0 = time.monotonic()
    res = ros_client.call(Segment, "/stamp_node/segment", req, timeout=60).result
    assert not res.success and "no camera frame" in res.error
    assert 0.4 < time.monotonic() - t0 < 20

    img_pub = ros_client.publisher(Image, "/image")
    ros_client.wait_for_subscribers(img_pub)
    publish_frame(ros_client, img_pub, make_frame(), stamp_sec=5)
    time.sleep(2.0)  # the frame is now older than max_frame_age
    res = ros_client.call(Segment, "/stamp_node/segment", req, timeout=60).result
    assert not res.success and "max_frame_age" in res.error

    publish_frame(ros_client, img_pub, make_frame(), stamp_sec=6)
    res = ros_client.call(Segment, "/stamp_node/segment", req, timeout=60).result
    assert res.success, res.error
    assert res.header.stamp.sec == 6


@pytest.fixture(scope="session")
def slow_checkpoint(tmp_path_factory) -> Path:
    """160 decoded tokens per frame: far more work than one 30 Hz frame period on any CPU, so
    a node that keeps up must drop frames (the test does not depend on this machine's speed)."""
    return make_long_answer_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-slow", 160)




def test_continuous_mode_keeps_up_by_dropping_frames(processes, ros_client, slow_checkpoint):
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    node = start_node(processes, ros_client, slow_checkpoint, mode="continuous",
                      reanswer_every=1, max_new_tokens=200)
    results, _, _ = subscribe_outputs(ros_client)
    img_pub = ros_client.publisher(Image, "/image")
    query_pub = ros_client.publisher(String, "/query")
    ros_client.wait_for_subscribers(img_pub)
    ros_client.wait_for_subscribers(query_pub)
    query_pub.publish(String(data="segment the square"))
    wait_output(processes, node, "tracking 'segment the square'")
    sent = 0
    t_end = time.monotonic() + 6.0
    while time.monotonic() < t_end:
        sent += 1
        publish_frame(ros_client, img_pub, make_frame(seed=sent % 3), stamp_sec=100 + sent)
        time.sleep(1 / 30)  # the camera's rate, not a synchronisation
    n_at_stop = len(results.messages)
    # One last frame: the newest frame always wins, so its result is the last one; what comes
    # between the end of the stream and it is the backlog: at most the frame being processed,
    # the one waiting in the continuous slot and one still in the image reader (depth 1).
    last_sec = 100 + sent + 1
    publish_frame(ros_client, img_pub, make_frame(seed=0), stamp_sec=last_sec)
    results.wait_for(1, timeout=120, where=lambda r: r.header.stamp.sec == last_sec)
    after_stop = results.messages[n_at_stop:]
    assert after_stop[-1].header.stamp.sec == last_sec, [r.header.stamp.sec for r in after_stop]
    assert len(after_stop) <= 4, [r.header.stamp.sec for r in after_stop]
    ok = [r for r in results.messages if r.success]
    assert all(r.success for r in results.messages), [r.error for r in results.messages]
    assert 1 <= len(ok) < sent, (len(ok), sent)  # frames were dropped, never queued
    stamps = [r.header.stamp.sec for r in ok]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(101 <= s <= last_sec for s in stamps)
    assert all(not r.answer_reused and r.answer.startswith("w0 w1") for r in ok)


def test_bad_input_gets_error_results_and_node_keeps_serving(processes, ros_client, checkpoint):
    from sensor_msgs.msg import CompressedImage, Image
    from stamp_ros.srv import Segment

    node = start_node(processes, ros_client, checkpoint)

    def ask(image=None, query="segment the square"):
        req = Segment.Request()
        req.query = query
        if image is not None:
            req.image = image
        return ros_client.call(Segment, "/stamp_node/segment", req, timeout=120).result

    bad = []
    short = image_msg(make_frame(64, 48))
    short.data = short.data[: len(short.data) // 2]
    bad.append(("short data", short))
    unknown = image_msg(make_frame(64, 48))
    unknown.encoding = "weird42"
    bad.append(("unknown encoding", unknown))
    step = image_msg(make_frame(64, 48))
    step.step = 10
    bad.append(("step too small", step))
    huge = Image()
    huge.width, huge.height, huge.encoding, huge.step = 100000, 100000, "rgb8", 300000
    huge.data = bytes(16)
    bad.append(("huge declared size", huge))
    for what, msg in bad:
        res = ask(msg)
        assert not res.success and res.error, what
    res = ask(image_msg(make_frame()), query="   ")
    assert not res.success and "empty query" in res.error
    res = ask(image_msg(make_frame()), query="x" * 100_000)
    assert not res.success and "too long" in res.error
    assert isinstance(CompressedImage(), CompressedImage)
    res = ask(image_msg(make_frame(), stamp_sec=9))
    assert res.success and res.header.stamp.sec == 9, res.error
    assert node.poll() is None


def test_queue_overflow_answers_errors_not_a_crash(processes, ros_client, checkpoint):
    from std_msgs.msg import String

    node = start_node(processes, ros_client, checkpoint, max_pending=1, frame_timeout=3.0)
    results, _, _ = subscribe_outputs(ros_client)
    query_pub = ros_client.publisher(String, "/query")
    ros_client.wait_for_subscribers(query_pub)
    for i in range(6):
        query_pub.publish(String(data=f"segment thing {i}"))
    msgs = results.wait_for(6, timeout=60)
    full = [m for m in msgs if "queue full" in m.error]
    assert full, [m.error for m in msgs]
    assert all(not m.success for m in msgs)  # no frames at all: the rest time out
    assert node.poll() is None


def test_deactivate_frees_and_activate_reloads(processes, ros_client, checkpoint):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from stamp_ros.srv import Segment

    start_node(processes, ros_client, checkpoint)

    def change(tid):
        req = ChangeState.Request()
        req.transition.id = tid
        return ros_client.call(ChangeState, "/stamp_node/change_state", req, timeout=60).success

    def ask():
        req = Segment.Request()
        req.query, req.image = "segment the square", image_msg(make_frame())
        return ros_client.call(Segment, "/stamp_node/segment", req, timeout=120).result

    assert ask().success
    assert change(Transition.TRANSITION_DEACTIVATE)
    res = ask()
    assert not res.success and "inactive" in res.error
    assert change(Transition.TRANSITION_ACTIVATE)
    assert ask().success


def test_model_parameters_are_refused_while_active_and_live_ones_apply(
        processes, ros_client, checkpoint):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    start_node(processes, ros_client, checkpoint)

    def set_param(name, value):
        p = Parameter(name=name)
        if isinstance(value, str):
            p.value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        else:
            p.value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        req = SetParameters.Request(parameters=[p])
        return ros_client.call(SetParameters, "/stamp_node/set_parameters", req,
                               timeout=30).results[0]

    res = set_param("model", "/elsewhere")
    assert not res.successful and "deactivate" in res.reason
    res = set_param("mode", "sideways")
    assert not res.successful and "once, continuous" in res.reason
    assert set_param("max_new_tokens", 16).successful
    assert set_param("mode", "continuous").successful
