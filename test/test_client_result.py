"""stamp_ros.client.result: Segmentation / Instance messages as numpy, without spinning ROS."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("stamp_ros.msg", reason="stamp_ros interfaces not built (scripts/setup)")

from stamp_ros.client.result import (
    TIMING_FIELDS,
    SegmentedObject,
    SegmentFeedback,
    SegmentResult,
    mask_from_image,
)

H, W = 6, 8


def instance(mask: np.ndarray, *, grid=None, logits=None, has_3d=False, step_pad=0):
    from stamp_ros.msg import Instance

    from stamp_ros.ros.kit import build_image_msg, mono8_to_image_msg

    inst = Instance()
    if step_pad:
        h, w = mask.shape
        padded = np.zeros((h, w + step_pad), np.uint8)
        padded[:, :w] = mask.astype(np.uint8) * 255
        inst.mask = build_image_msg(None, h, w, "mono8", w + step_pad, False, padded.tobytes())
    else:
        inst.mask = mono8_to_image_msg(mask)
    grid = np.array([[1, 0, 0], [0, 1, 1]], np.uint8) if grid is None else grid
    logits = (np.where(grid > 0, 2.5, -1.5).astype(np.float32) if logits is None else logits)
    inst.grid_height, inst.grid_width = (int(n) for n in grid.shape)
    inst.grid = grid.reshape(-1).tolist()
    inst.grid_logits = logits.reshape(-1).tolist()
    ys, xs = np.nonzero(mask)
    if len(xs):
        inst.x_min, inst.y_min, inst.x_max, inst.y_max = (int(xs.min()), int(ys.min()),
                                                          int(xs.max()), int(ys.max()))
    else:
        inst.x_min = inst.y_min = 0
        inst.x_max = inst.y_max = -1
    inst.area = int(mask.sum())
    inst.score = 0.75
    if has_3d:
        inst.has_3d = True
        inst.frame_id_3d = "cam_optical"
        inst.centroid.x, inst.centroid.y, inst.centroid.z = 0.1, -0.2, 1.5
        inst.box_center.x, inst.box_center.y, inst.box_center.z = 0.12, -0.18, 1.55
        inst.size.x, inst.size.y, inst.size.z = 0.3, 0.2, 0.1
        inst.num_points = 42
    return inst


def segmentation(*instances, success=True, error=""):
    from stamp_ros.msg import Segmentation

    msg = Segmentation()
    msg.header.frame_id = "cam"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 500_000_000
    msg.request_id, msg.query, msg.answer = "r1", "segment the square", "Sure, it is here:"
    msg.conversation, msg.turn = "kitchen", 2
    msg.success, msg.error = success, error
    msg.instances = list(instances)
    msg.grid_height, msg.grid_width = 2, 3
    msg.model = "tiny"
    msg.frame_age_ms = 12.5
    msg.answer_reused = True
    for i, name in enumerate(TIMING_FIELDS):
        setattr(msg, name, float(i + 1))
    return msg


def rect_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


def test_result_fields_objects_and_union():
    a, b = rect_mask(1, 1, 3, 2), rect_mask(5, 3, 7, 5)
    msg = segmentation(instance(a, has_3d=True), instance(b))
    res = SegmentResult.from_msg(msg)

    assert res.ok and res.success and res.error == ""
    assert (res.request_id, res.query, res.answer) == ("r1", "segment the square",
                                                       "Sure, it is here:")
    assert (res.conversation, res.turn, res.model) == ("kitchen", 2, "tiny")
    assert res.frame_id == "cam" and res.stamp == pytest.approx(12.5)
    assert res.header is msg.header
    assert res.grid_size == (2, 3)
    assert res.timings == {name: float(i + 1) for i, name in enumerate(TIMING_FIELDS)}
    assert res.frame_age_ms == pytest.approx(12.5) and res.answer_reused

    first, second = res.objects
    assert first.mask.dtype == np.bool_ and first.mask.shape == (H, W)
    np.testing.assert_array_equal(first.mask, a)
    np.testing.assert_array_equal(second.mask, b)
    assert first.box == (1, 1, 3, 2) and second.box == (5, 3, 7, 5)
    assert first.area == int(a.sum()) and first.score == pytest.approx(0.75)
    assert first.grid.dtype == np.uint8 and first.grid.shape == (2, 3)
    np.testing.assert_array_equal(first.grid, [[1, 0, 0], [0, 1, 1]])
    assert first.grid_logits.dtype == np.float32 and first.grid_logits.shape == (2, 3)
    assert first.grid_logits[0, 0] == pytest.approx(2.5)
    assert first.grid_logits[0, 1] == pytest.approx(-1.5)

    assert first.has_3d and not second.has_3d
    np.testing.assert_allclose(first.centroid, [0.1, -0.2, 1.5])
    np.testing.assert_allclose(first.box_center, [0.12, -0.18, 1.55])
    np.testing.assert_allclose(first.size, [0.3, 0.2, 0.1])
    assert first.num_points == 42 and first.frame_id_3d == "cam_optical"
    assert second.centroid is None and second.box_center is None and second.size is None
    assert second.num_points == 0 and second.frame_id_3d == ""

    union = res.union_mask()
    assert union.dtype == np.bool_
    np.testing.assert_array_equal(union, a | b)
    # The arrays are the result's own: changing the message afterwards changes nothing.
    msg.instances[0].grid[0] = 0
    assert first.grid[0, 0] == 1


def test_error_result_and_empty_objects():
    res = SegmentResult.from_msg(segmentation(success=False, error="no camera frame"))
    assert not res.ok and res.error == "no camera frame" and res.objects == []
    assert res.union_mask() is None
    empty = res.union_mask((H, W, 3))
    assert empty.shape == (H, W) and empty.dtype == np.bool_ and not empty.any()


def test_empty_mask_has_no_box():
    obj = SegmentedObject.from_msg(instance(np.zeros((H, W), bool)))
    assert obj.box is None and obj.area == 0 and not obj.mask.any()


def test_mask_row_padding_is_honoured():
    mask = rect_mask(2, 0, 4, 5)
    obj = SegmentedObject.from_msg(instance(mask, step_pad=5))
    assert obj.mask.shape == (H, W)
    np.testing.assert_array_equal(obj.mask, mask)


def test_malformed_messages_are_value_errors():
    bad_grid = instance(rect_mask(0, 0, 1, 1))
    bad_grid.grid_width = 4  # 2x4 declared, 6 cells sent
    with pytest.raises(ValueError, match="grid"):
        SegmentedObject.from_msg(bad_grid)

    short = SimpleNamespace(height=4, width=4, step=4, encoding="mono8", data=bytes(10))
    with pytest.raises(ValueError, match="bytes"):
        mask_from_image(short)
    rgb = SimpleNamespace(height=1, width=1, step=3, encoding="rgb8", data=bytes(3))
    with pytest.raises(ValueError, match="mono8"):
        mask_from_image(rgb)


def test_duck_typed_message_and_bytes_payload():
    """Any object with the fields works (e.g. a message deserialised by rosbags)."""
    mask = SimpleNamespace(height=2, width=3, step=3, encoding="8UC1",
                           data=bytes([0, 255, 0, 1, 0, 0]))
    inst = SimpleNamespace(mask=mask, grid_height=1, grid_width=2, grid=b"\x01\x00",
                           grid_logits=np.array([0.5, -0.5], np.float32), x_min=0, y_min=0,
                           x_max=1, y_max=1, area=2, score=0.6, has_3d=False, frame_id_3d="",
                           centroid=None, box_center=None, size=None, num_points=0)
    obj = SegmentedObject.from_msg(inst)
    np.testing.assert_array_equal(obj.mask, [[False, True, False], [True, False, False]])
    np.testing.assert_array_equal(obj.grid, [[1, 0]])


def test_feedback_from_action_feedback_message():
    from stamp_ros.action import Segment

    fb = Segment.Feedback()
    fb.stage, fb.partial_answer, fb.elapsed_ms = "decode", "Sure,", 12.0
    wrapped = Segment.Impl.FeedbackMessage()
    wrapped.feedback = fb
    assert SegmentFeedback.from_msg(fb) == SegmentFeedback("decode", "Sure,", 12.0)
    assert SegmentFeedback.from_msg(wrapped) == SegmentFeedback("decode", "Sure,", 12.0)


def test_result_module_does_not_import_rclpy():
    code = ("import sys, stamp_ros.client, stamp_ros.client.result; "
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
