"""README promises of the running node, each observed from outside over real ROS 2 (issue 11,
section 3): continuous-mode answer reuse, live parameters, image QoS, the overlay, depth pairing
by stamp, the action's camera field and the request limit shared by all cameras.

Every test starts ``stamp_ros`` in its own process (its own ROS domain) with a tiny random
checkpoint and checks what a planner would see: results, their fields, topics and QoS events.
"""

from __future__ import annotations

import numpy as np
import pytest
from feature_helpers import (
    Caller,
    diag_values,
    inline,
    make_test_checkpoint,
    mask_bytes,
    set_ok,
    streaming,
    wait_until,
)
from node_harness import image_msg, make_frame, ready_action_client, start_node, wait_output

pytestmark = pytest.mark.ros

ANSWER = "Sure, it is here: <|seg|>"
QUERY = "segment the square"
BLACK = np.zeros((120, 160, 3), np.uint8)
BLUE = np.zeros((120, 160, 3), np.uint8)
BLUE[..., 2] = 255


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Scripted answer: 'Sure, it is here: <|seg|>' for any image, one mask."""
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-tiny", seed=0,
                                answer=ANSWER)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """Unwired random weights: the greedy answer depends on the image."""
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-random", seed=0,
                                answer=None)




# ------------------------------------------------------------------ continuous answer reuse
def test_continuous_mode_teacher_forces_between_regenerations(
        processes, ros_client, random_checkpoint):
    """reanswer_every=3: frames 1, 4, 7, ... decode a new answer; the frames in between reuse
    it. With a model whose answer depends on the image, a reused answer is visible: a blue
    frame answered with the black frame's text was teacher-forced, not decoded; the result's
    answer_reused says the same."""
    from sensor_msgs.msg import Image
    from stamp_ros.msg import Segmentation
    from std_msgs.msg import String

    every = 3
    node = start_node(processes, ros_client, random_checkpoint, mode="continuous",
                      reanswer_every=every, max_new_tokens=12)
    results = ros_client.subscribe(Segmentation, "/stamp_node/result", ros_client.reliable(50))
    segment = Caller(ros_client)

    # What decoding gives for each image (service requests are never teacher-forced).
    decoded = {}
    for name, rgb in (("black", BLACK), ("blue", BLUE)):
        res = segment(image=inline(rgb, stamp_sec=1))
        assert res.success, res.error
        decoded[name] = res.answer
    assert decoded["black"] != decoded["blue"], (
        "precondition: the random checkpoint must answer the two images differently", decoded)

    img_pub = ros_client.publisher(Image, "/image")
    query_pub = ros_client.publisher(String, "/query")
    ros_client.wait_for_subscribers(img_pub)
    ros_client.wait_for_subscribers(query_pub)
    query_pub.publish(String(data=QUERY))
    wait_output(processes, node, "tracking", timeout=30)

    frames = ["black", "blue", "blue", "blue", "black", "black", "black", "blue"]
    got, reused = [], []
    for i, name in enumerate(frames):
        # One frame at a time, each after the previous result: no frame is dropped, so the
        # node answers exactly these frames in this order.
        stamp = 100 + i
        img_pub.publish(image_msg(BLACK if name == "black" else BLUE, stamp_sec=stamp))
        (res,) = results.wait_for(1, timeout=120, where=lambda r, s=stamp: (
            r.request_id.startswith("c") and r.header.stamp.sec == s))
        assert res.success, res.error
        assert res.query == QUERY
        got.append(res.answer)
        reused.append(res.answer_reused)

    expected = []
    for i, name in enumerate(frames):
        # frame i decodes when i % every == 0, else reuses the last decoded answer
        expected.append(decoded[name] if i % every == 0 else expected[-1])
    assert [a == decoded["black"] for a in expected] == [True, True, True, False, False, False,
                                                         True, True]
    names = {v: k for k, v in decoded.items()}
    assert got == expected, (
        "answers per frame (by the image whose decoding they match): "
        f"got {[names.get(a, a) for a in got]}, expected {[names[a] for a in expected]}")
    assert reused == [i % every != 0 for i in range(len(frames))], reused


# ------------------------------------------------------------------ live parameters
def test_live_parameters_apply_to_the_next_result(processes, ros_client, checkpoint):
    """max_new_tokens, mask_upsample, publish_overlay, max_frame_age and frame_timeout are live:
    a change is seen in the very next result. Also: a node set to image_reliability:=reliable
    does not match a best-effort image publisher (QoS incompatible event, no subscription
    match)."""
    from rclpy.event_handler import PublisherEventCallbacks
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from stamp_ros.engine.masks import logits_to_mask

    start_node(processes, ros_client, checkpoint, frame_timeout=10.0,
               image_reliability="reliable")
    segment = Caller(ros_client)
    overlays = ros_client.subscribe(Image, "/stamp_node/overlay")
    rgb = make_frame(160, 120, seed=3)
    problems: list[str] = []

    def check(name, fn):
        try:
            fn()
        except AssertionError as exc:
            problems.append(f"{name}: {exc}")

    def max_new_tokens() -> None:
        full = segment(image=inline(rgb, stamp_sec=1))
        assert full.success and full.answer == "Sure, it is here:", full.answer
        assert len(full.instances) == 1
        set_ok(ros_client, max_new_tokens=2)
        try:
            short = segment(image=inline(rgb, stamp_sec=2))
        finally:
            set_ok(ros_client, max_new_tokens=24)
        assert short.success, short.error
        assert (short.answer, len(short.instances)) == ("Sure, it", 0), (
            f"after max_new_tokens:=2 the answer is {short.answer!r} with "
            f"{len(short.instances)} mask(s); two tokens are 'Sure, it' and no <|seg|>")
        again = segment(image=inline(rgb, stamp_sec=3))
        assert again.answer == full.answer and len(again.instances) == 1

    def mask_upsample() -> None:
        near = segment(image=inline(rgb, stamp_sec=4))
        set_ok(ros_client, mask_upsample="bilinear")
        try:
            bil = segment(image=inline(rgb, stamp_sec=5))
        finally:
            set_ok(ros_client, mask_upsample="nearest")
        assert near.success and bil.success, (near.error, bil.error)
        a, b = near.instances[0], bil.instances[0]
        logits = np.frombuffer(bytes(a.grid_logits), np.float32).reshape(a.grid_height,
                                                                         a.grid_width)
        assert 0 < (logits > 0).sum() < logits.size, "precondition: a mixed grid"
        assert bytes(a.grid_logits) == bytes(b.grid_logits), "same frame, same model"
        for inst, mode in ((a, "nearest"), (b, "bilinear")):
            want = logits_to_mask(logits, (120, 160), mode).astype(np.uint8) * 255
            got = np.frombuffer(mask_bytes(inst), np.uint8).reshape(120, 160)
            assert np.array_equal(got, want), (
                f"mask_upsample {mode}: the mask is not the {mode} upsampling of the grid "
                f"({int((got != want).sum())} pixels differ)")

    def publish_overlay() -> None:
        # Subscribed: an overlay per result. The first request repeats until the node's
        # overlay publisher has matched this subscription (discovery is asynchronous).
        first = None
        for attempt in range(20):
            res = segment(image=inline(rgb, stamp_sec=10, stamp_nanosec=attempt))
            assert res.success, res.error
            try:
                first = overlays.wait_for(1, timeout=3, where=lambda m: m.header.stamp.sec == 10)[0]
                break
            except TimeoutError:
                continue
        assert first is not None, "no ~/overlay although subscribed and publish_overlay true"
        assert (first.width, first.height, first.encoding) == (160, 120, "rgb8")
        set_ok(ros_client, publish_overlay=False)
        try:
            assert segment(image=inline(rgb, stamp_sec=11)).success
        finally:
            set_ok(ros_client, publish_overlay=True)
        assert segment(image=inline(rgb, stamp_sec=12)).success
        # One publisher, reliable, in order: once 12 is here, 11 would have arrived before it.
        overlays.wait_for(1, timeout=30, where=lambda m: m.header.stamp.sec == 12)
        stamps = [m.header.stamp.sec for m in overlays.messages]
        assert 11 not in stamps, f"an overlay was published with publish_overlay false: {stamps}"

    def max_frame_age() -> None:
        img_pub = ros_client.publisher(Image, "/image")
        ros_client.wait_for_subscribers(img_pub)
        img_pub.publish(image_msg(rgb, stamp_sec=20))
        res = segment()  # waits (frame_timeout 10 s) for that frame
        assert res.success and res.header.stamp.sec == 20, res.error
        set_ok(ros_client, max_frame_age=0.0, frame_timeout=1.0)
        try:
            res = segment()
            assert not res.success and "max_frame_age 0 s" in res.error, res.error
            assert "frame_timeout 1 s" in res.error, res.error
            # The frame is now over 1 s old (the request above waited 1 s for a newer one):
            # the default max_frame_age (1 s) would refuse it, 600 s accepts it.
            set_ok(ros_client, max_frame_age=600.0)
            res = segment()
            assert res.success and res.header.stamp.sec == 20, res.error
            assert res.frame_age_ms > 1000, res.frame_age_ms
        finally:
            set_ok(ros_client, max_frame_age=1.0, frame_timeout=10.0)

    def best_effort_publisher_is_not_matched() -> None:
        events = []
        best_effort = ros_client.node.create_publisher(
            Image, "/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
            event_callbacks=PublisherEventCallbacks(incompatible_qos=events.append))
        wait_until(lambda: events, 30, "an incompatible-QoS event on a best-effort publisher "
                   "to the reliable node's image subscription")
        assert best_effort.get_subscription_count() == 0

    check("max_new_tokens", max_new_tokens)
    check("mask_upsample", mask_upsample)
    check("publish_overlay", publish_overlay)
    check("max_frame_age", max_frame_age)
    check("image_reliability reliable", best_effort_publisher_is_not_matched)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ best effort + depth skew
def _camera_info(width: int, height: int):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.frame_id = "cam"
    info.width, info.height = width, height
    info.k = [100.0, 0.0, width / 2, 0.0, 100.0, height / 2, 0.0, 0.0, 1.0]
    return info


def test_best_effort_images_and_depth_max_skew(processes, ros_client, checkpoint):
    """image_reliability:=best_effort: a best-effort camera is matched and its frames answered.
    depth_max_skew: a depth image further than the skew from the colour frame is not paired
    (no 3D), one within it is; raising the (live) skew pairs the far one too."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from stamp_ros.testing.images import array_to_image_msg

    node = start_node(processes, ros_client, checkpoint, image_reliability="best_effort",
                      frame_timeout=30.0)
    segment = Caller(ros_client)
    depth_pub = ros_client.publisher(Image, "/depth")
    info_pub = ros_client.publisher(CameraInfo, "/camera_info")
    for pub in (depth_pub, info_pub):
        ros_client.wait_for_subscribers(pub)
    depth = array_to_image_msg(np.full((120, 160), 1500, np.uint16), "16UC1")
    depth.header.frame_id, depth.header.stamp.sec = "cam", 50
    rgb = make_frame(160, 120, seed=4)

    def near(nanosec: int) -> bool:
        info_pub.publish(_camera_info(160, 120))
        depth_pub.publish(depth)
        res = segment(image=inline(rgb, stamp_sec=50, stamp_nanosec=nanosec))
        assert res.success, res.error
        return res.instances[0].has_3d

    # 30 ms from the depth stamp (skew 50 ms): paired once depth and camera info are in
    # (they travel on other topics than the request, so repeat until they have arrived).
    for _ in range(50):
        if near(30_000_000):
            break
    else:
        raise AssertionError("a depth image 30 ms from the frame was never paired:\n"
                             + processes.output(node)[-3000:])
    for sec, nanosec in ((49, 970_000_000), (50, 0)):  # 30 ms before, and exact
        res = segment(image=inline(rgb, stamp_sec=sec, stamp_nanosec=nanosec))
        assert res.success and res.instances[0].has_3d, f"{sec}.{nanosec:09d}: not paired"
    for sec, nanosec in ((50, 200_000_000), (49, 940_000_000)):  # 200 ms after, 60 ms before
        res = segment(image=inline(rgb, stamp_sec=sec, stamp_nanosec=nanosec))
        assert res.success, res.error
        assert not res.instances[0].has_3d, (
            f"{sec}.{nanosec:09d} paired with depth at 50.0 although depth_max_skew is 50 ms")
    assert ("3D withheld: depth 200 ms from the colour frame (depth_max_skew 50 ms)"
            in processes.output(node))
    assert res.instances[0].status_3d == ("depth 60 ms from the colour frame "
                                          "(depth_max_skew 50 ms)"), res.instances[0].status_3d
    set_ok(ros_client, depth_max_skew=0.5)
    far = segment(image=inline(rgb, stamp_sec=50, stamp_nanosec=200_000_000))
    assert far.success and far.instances[0].has_3d, "depth_max_skew:=0.5 not applied"
    assert far.instances[0].centroid.z == pytest.approx(1.5, abs=1e-3)

    # A best-effort camera: matched, and its frames answered.
    cam = ros_client.publisher(Image, "/image",
                               QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    ros_client.wait_for_subscribers(cam)
    with streaming(cam, rgb, rate_hz=10, first_stamp=60) as sent:
        res = segment()  # no inline image: the node's newest camera frame
    assert res.success, res.error
    assert res.header.stamp.sec in sent, (res.header.stamp.sec, sent[:3], sent[-3:])


# ------------------------------------------------------------------ cameras + max_pending
def test_action_camera_field_and_max_pending_shared_by_cameras(processes, ros_client,
                                                               checkpoint):
    """cameras:=[front, wrist], max_pending:=1: a goal for the wrist camera waits for a wrist
    frame (not a front one); while it holds the model, one front goal waits and a further
    wrist goal is refused as queue full: the limit is shared by all cameras."""
    from action_msgs.msg import GoalStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_client import wait_future
    from sensor_msgs.msg import Image
    from stamp_ros.action import Segment as SegmentAction

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics", ros_client.reliable(100))
    start_node(processes, ros_client, checkpoint, cameras="['front', 'wrist']", max_pending=1,
               frame_timeout=120.0, stats_period=0.2)
    client = ready_action_client(ros_client)
    feedback: dict[str, list[str]] = {}

    def send(camera: str, name: str):
        goal = SegmentAction.Goal()
        goal.query, goal.camera, goal.request_id = QUERY, camera, name
        feedback[name] = []
        handle = wait_future(client.send_goal_async(
            goal, feedback_callback=lambda f: feedback[name].append(f.feedback.stage)), 30)
        assert handle.accepted
        return handle

    def queue_depth(n: int):
        return lambda: any(diag_values(a).get("queue_depth") == str(n) for a in diags.messages)

    wrist_goal = send("wrist", "g-wrist")
    wait_until(lambda: "waiting_for_frame" in feedback["g-wrist"], 60,
               "the wrist goal waiting for a wrist frame", lambda: str(feedback))
    diags.messages.clear()
    front_goal = send("front", "g-front")
    wait_until(queue_depth(1), 60, "queue_depth 1 in /diagnostics")
    refused = send("wrist", "g-refused")
    res = wait_future(refused.get_result_async(), 60)
    assert res.status == GoalStatus.STATUS_ABORTED
    assert "queue full" in res.result.result.error, res.result.result.error

    cams = {c: ros_client.publisher(Image, f"/{c}/image") for c in ("front", "wrist")}
    for pub in cams.values():
        ros_client.wait_for_subscribers(pub)
    cams["front"].publish(image_msg(make_frame(120, 90, seed=1), stamp_sec=71, frame_id="front"))
    cams["wrist"].publish(image_msg(make_frame(80, 60, seed=2), stamp_sec=72, frame_id="wrist"))
    for handle, frame_id, stamp, width in ((wrist_goal, "wrist", 72, 80),
                                           (front_goal, "front", 71, 120)):
        res = wait_future(handle.get_result_async(), 120)
        assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.result.error
        out = res.result.result
        assert (out.header.frame_id, out.header.stamp.sec) == (frame_id, stamp)
        assert out.instances[0].mask.width == width
    wait_until(lambda: any(diag_values(a).get("rejected_requests") == "1"
                           for a in diags.messages), 30, "rejected_requests 1 in /diagnostics")


def test_empty_camera_field_means_the_first_camera(processes, ros_client, checkpoint):
    """Segment.srv / Segment.action: 'empty = the first (or only) camera' also on a node with
    several cameras."""
    from action_msgs.msg import GoalStatus
    from ros_client import wait_future
    from sensor_msgs.msg import Image
    from stamp_ros.action import Segment as SegmentAction

    start_node(processes, ros_client, checkpoint, cameras="['front', 'wrist']",
               frame_timeout=60.0)
    segment = Caller(ros_client)
    client = ready_action_client(ros_client)
    front = ros_client.publisher(Image, "/front/image")
    ros_client.wait_for_subscribers(front)
    goal = SegmentAction.Goal()
    goal.query, goal.camera = QUERY, ""
    with streaming(front, make_frame(120, 90, seed=1), frame_id="front"):
        res = segment(camera="")
        handle = wait_future(client.send_goal_async(goal), 30)
        action = wait_future(handle.get_result_async(), 120)
    assert res.success, f"service, camera '' on a [front, wrist] node: {res.error}"
    assert res.header.frame_id == "front"
    assert action.status == GoalStatus.STATUS_SUCCEEDED, (
        f"action, camera '' on a [front, wrist] node: {action.result.result.error}")
    assert action.result.result.header.frame_id == "front"
