"""The generated stamp_ros interfaces work across processes (topic, service, action)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "peers"))
from interface_peer import make_mask

PEER = str(Path(__file__).parent / "peers" / "interface_peer.py")


def test_generated_types_import_and_have_documented_fields():
    from stamp_ros.action import Segment as SegmentAction
    from stamp_ros.msg import Instance, Segmentation
    from stamp_ros.srv import Segment, Track

    seg = Segmentation()
    for field in ("header", "request_id", "query", "answer", "success", "error", "instances",
                  "preprocess_ms", "generate_ms", "mask_ms", "postprocess_ms", "total_ms",
                  "propagated", "model_stamp"):
        assert hasattr(seg, field), field
    inst = Instance()
    for field in ("mask", "grid_height", "grid_width", "grid", "x_min", "y_min", "x_max",
                  "y_max", "area", "score", "has_3d", "centroid", "size", "track_id"):
        assert hasattr(inst, field), field
    assert hasattr(Segment.Request(), "image") and hasattr(Segment.Response(), "result")
    assert hasattr(Track.Request(), "camera") and hasattr(Track.Response(), "tracks_topic")
    assert hasattr(SegmentAction.Feedback(), "partial_answer")
    assert hasattr(SegmentAction.Goal(), "query")


def _check_instance(inst, header, width: int, height: int, seed: int) -> None:
    assert inst.mask.header == header
    assert (inst.mask.width, inst.mask.height, inst.mask.encoding) == (width, height, "mono8")
    got = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(height, width)
    np.testing.assert_array_equal(got, make_mask(width, height, seed))
    assert list(inst.grid) == [(i + seed) % 2 for i in range(12)]
    assert list(inst.grid_logits) == [float(i - seed) for i in range(12)]
    box = (inst.x_min, inst.y_min, inst.x_max, inst.y_max)
    assert box == (seed, seed + 1, width - 1, height - 1)
    assert inst.score == pytest.approx(0.25 * (seed + 1))
    assert inst.centroid.z == pytest.approx(1.5 + seed)
    assert inst.num_points == 1000 + seed


@pytest.mark.ros
def test_segmentation_with_two_1080p_masks_crosses_processes(processes, ros_client):
    from stamp_ros.msg import Segmentation

    processes.start(PEER, name="peer")
    got = ros_client.subscribe(Segmentation, "result")
    (msg,) = got.wait_for(1, timeout=60)[:1]
    assert msg.success and msg.query == "two" and msg.answer == "Sure, here is two."
    assert msg.header.frame_id == "camera_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1234, 5678)
    assert len(msg.instances) == 2
    for seed, inst in enumerate(msg.instances):
        _check_instance(inst, msg.header, 1920, 1080, seed)
    assert msg.instances[1].has_3d and not msg.instances[0].has_3d
    assert (msg.preprocess_ms, msg.total_ms) == (1.5, 12.0)


def _request_image():
    from sensor_msgs.msg import Image

    img = Image()
    img.header.frame_id = "cam"
    img.header.stamp.sec = 42
    img.width, img.height, img.encoding, img.step = 64, 48, "rgb8", 64 * 3
    img.data = bytes(64 * 48 * 3)
    return img


@pytest.mark.ros
def test_service_round_trip(processes, ros_client):
    from stamp_ros.srv import Segment

    processes.start(PEER, name="peer")
    req = Segment.Request()
    req.query, req.image = "the mug", _request_image()
    resp = ros_client.call(Segment, "segment", req, timeout=60)
    res = resp.result
    assert res.success and res.query == "the mug" and res.answer == "Sure, here is the mug."
    assert res.header.frame_id == "cam" and res.header.stamp.sec == 42
    _check_instance(res.instances[0], res.header, 64, 48, 0)


@pytest.mark.ros
def test_action_round_trip_with_feedback(processes, ros_client):
    from ros_client import wait_future
    from stamp_ros.action import Segment as SegmentAction

    processes.start(PEER, name="peer")
    client = ros_client.action_client(SegmentAction, "segment")
    assert client.wait_for_server(timeout_sec=60)
    feedback = []
    goal = SegmentAction.Goal()
    goal.query, goal.image = "the cup", _request_image()
    handle = wait_future(client.send_goal_async(goal, feedback_callback=feedback.append), 30)
    assert handle.accepted
    result = wait_future(handle.get_result_async(), 30).result.result
    assert result.success and result.answer == "Sure, here is the cup."
    _check_instance(result.instances[0], result.header, 64, 48, 0)
    assert [f.feedback.stage for f in feedback] == ["preprocess", "generate", "mask"]
    assert all(f.feedback.partial_answer == "the" for f in feedback)
