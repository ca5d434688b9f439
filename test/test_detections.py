"""The ecosystem's messages built from a finished Segmentation (issue 30), without rclpy:
stamp_ros.pipeline.detections through the bag's rosbags kit, real message classes, CDR round
trip. The node publishes exactly these builders' output (test_node_detections.py checks the
wire); the last test compares the rclpy kit's messages field by field where rclpy is here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from message_fields import flat_fields

from stamp_ros.bag.interfaces import RosbagsKit, typestore
from stamp_ros.engine.result import SegInstance, StampResult
from stamp_ros.pipeline.detections import (
    box_2d,
    detection_id,
    detections_2d,
    detections_3d,
    label_image,
    labels_msg,
    object_transforms,
    tf_message,
)
from stamp_ros.pipeline.results import mark_tracked, segmentation_msg
from stamp_ros.spatial.geometry import Object3D

# ---------------------------------------------------------------- checks shared by the node and
# bag tests: an output against the Segmentation it comes from (any kit's messages)


def stamp(msg: Any) -> tuple[int, int]:
    return int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)


def expected_id(seg: Any, k: int) -> str:
    track_id = seg.instances[k].track_id
    return str(track_id) if track_id else f"{seg.request_id}_{k}"


def masks_of(seg: Any) -> list[np.ndarray]:
    from stamp_ros.client.result import mask_from_image

    return [mask_from_image(inst.mask) for inst in seg.instances]


def check_2d(seg: Any, dets: Any) -> None:
    assert stamp(dets) == stamp(seg) and dets.header.frame_id == seg.header.frame_id
    assert len(dets.detections) == len(seg.instances)
    for k, (det, inst) in enumerate(zip(dets.detections, seg.instances, strict=True)):
        assert det.id == expected_id(seg, k)
        (hyp,) = det.results
        assert hyp.hypothesis.class_id == seg.query
        assert hyp.hypothesis.score == pytest.approx(inst.score)
        box = det.bbox
        assert (box.center.position.x, box.center.position.y) == (
            (inst.x_min + inst.x_max) / 2, (inst.y_min + inst.y_max) / 2)
        assert (box.size_x, box.size_y) == (max(0, inst.x_max - inst.x_min + 1),
                                            max(0, inst.y_max - inst.y_min + 1))


def check_labels(seg: Any, image: Any) -> None:
    masks = masks_of(seg)
    h, w = masks[0].shape if masks else (image.height, image.width)
    assert (image.encoding, image.height, image.width, image.step, image.is_bigendian) == (
        "16UC1", h, w, 2 * w, 0)
    assert stamp(image) == stamp(seg) and image.header.frame_id == seg.header.frame_id
    want = np.zeros((h, w), np.uint16)
    for k in reversed(range(len(masks))):
        want[masks[k]] = k + 1
    got = np.frombuffer(bytes(image.data), "<u2").reshape(h, w)
    np.testing.assert_array_equal(got, want)


def check_3d(seg: Any, dets: Any) -> None:
    chosen = [(k, inst) for k, inst in enumerate(seg.instances) if inst.has_3d]
    assert chosen and [d.id for d in dets.detections] == [expected_id(seg, k) for k, _ in chosen]
    for det, (_, inst) in zip(dets.detections, chosen, strict=True):
        assert det.header.frame_id == inst.frame_id_3d and stamp(det) == stamp(seg)
        pos = det.results[0].pose.pose.position
        assert (pos.x, pos.y, pos.z) == (inst.centroid.x, inst.centroid.y, inst.centroid.z)
        center, size = det.bbox.center.position, det.bbox.size
        assert (center.x, center.y, center.z) == (inst.box_center.x, inst.box_center.y,
                                                  inst.box_center.z)
        assert (size.x, size.y, size.z) == (inst.size.x, inst.size.y, inst.size.z)


def check_tf(seg: Any, transforms: list[Any], prefix: str) -> None:
    """``transforms``: every transform received at ``seg``'s stamp."""
    want = {f"{prefix}{expected_id(seg, k)}": inst for k, inst in enumerate(seg.instances)
            if inst.has_3d}
    assert sorted(t.child_frame_id for t in transforms) == sorted(want)
    for t in transforms:
        inst = want[t.child_frame_id]
        assert t.header.frame_id == inst.frame_id_3d
        v, r = t.transform.translation, t.transform.rotation
        assert (v.x, v.y, v.z) == (inst.centroid.x, inst.centroid.y, inst.centroid.z)
        assert (r.x, r.y, r.z, r.w) == (0.0, 0.0, 0.0, 1.0)



# ---------------------------------------------------------------- the builders

H, W = 12, 16
QUERY = "segment the mugs"


def _inst(mask: np.ndarray, score: float) -> SegInstance:
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if xs.size else (
        0, 0, -1, -1)
    grid = np.zeros((2, 2), np.uint8)
    return SegInstance(grid=grid, logits=grid.astype(np.float32), mask=mask.astype(np.uint8),
                       bbox=bbox, area=int(mask.sum()), score=score)


def _masks() -> list[np.ndarray]:
    """Three masks: 0 and 1 overlap (0 listed first), 2 apart, plus an empty fourth."""
    a = np.zeros((H, W), bool)
    a[2:6, 3:9] = True
    b = np.zeros((H, W), bool)
    b[4:9, 6:12] = True
    c = np.zeros((H, W), bool)
    c[10, 14] = True  # one pixel: centre (14, 10), size 1 x 1
    return [a, b, c, np.zeros((H, W), bool)]


def _obj(z: float) -> Object3D:
    return Object3D(centroid=np.array([0.1, -0.2, z]), box_min=np.array([0.0, -0.3, z - 0.05]),
                    box_max=np.array([0.2, -0.1, z + 0.05]), size=np.array([0.2, 0.2, 0.1]),
                    n_points=30)


def _header(kit: RosbagsKit) -> Any:
    header = kit.header()
    header.stamp.sec, header.stamp.nanosec, header.frame_id = 77, 123, "cam"
    return header


def _seg(kit: RosbagsKit, masks: list[np.ndarray]) -> Any:
    result = StampResult(text="here", instances=[_inst(m, 0.5 + 0.1 * k)
                                                 for k, m in enumerate(masks)],
                         image_size=(W, H), grid_size=(2, 2), timings_ms={})
    objects = [_obj(1.5), None, _obj(2.5), None]  # instances 0 and 2 have 3D
    return segmentation_msg(request_id="q7", query=QUERY, header=_header(kit), result=result,
                            model="m", wait_ms=0.0, convert_ms=0.0, objects=objects,
                            frame_id_3d="cam_optical", kit=kit)


def _roundtrip(msg: Any) -> Any:
    store = typestore()
    msgtype = type(msg).__msgtype__
    return store.deserialize_cdr(store.serialize_cdr(msg, msgtype), msgtype)


def test_label_image_first_listed_keeps_overlaps_and_decodes_like_the_masks():
    kit = RosbagsKit()
    masks = _masks()
    seg = _seg(kit, masks)
    labels = label_image(masks, (H, W))
    assert labels.dtype == np.uint16 and labels.shape == (H, W)
    a, b, c, _ = masks
    assert (labels[a] == 1).all(), "instance 0 owns all of its mask, overlap included"
    assert (labels[b & ~a] == 2).all() and (labels[c] == 3).all()
    assert (labels[~(a | b | c)] == 0).all()
    assert (a & b).any(), "precondition: the masks overlap"

    msg = _roundtrip(labels_msg(seg, kit, (H, W), masks))
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == (
        "16UC1", H, W, 2 * W, 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        77, 123, "cam")
    got = np.frombuffer(np.asarray(msg.data, np.uint8).tobytes(), "<u2").reshape(H, W)
    np.testing.assert_array_equal(got, labels)
    # Without the numpy masks the builder decodes the Instance masks: the same image.
    np.testing.assert_array_equal(np.asarray(labels_msg(seg, kit, (H, W)).data),
                                  np.asarray(msg.data))
    # No instance: an all-zero frame-sized image; a mask of another size is refused.
    assert not label_image([], (H, W)).any()
    with pytest.raises(ValueError, match="mask 0"):
        label_image([np.ones((H, W + 1), bool)], (H, W))


def test_detections_2d_follow_the_instances_boxes_scores_and_ids():
    kit = RosbagsKit()
    seg = _seg(kit, _masks())
    msg = _roundtrip(detections_2d(seg, kit))
    assert msg.header.stamp.sec == 77 and msg.header.frame_id == "cam"
    assert len(msg.detections) == len(seg.instances) == 4
    for k, (det, inst) in enumerate(zip(msg.detections, seg.instances, strict=True)):
        assert det.id == f"q7_{k}"
        assert det.header.frame_id == "cam"
        (hyp,) = det.results
        assert hyp.hypothesis.class_id == QUERY
        assert hyp.hypothesis.score == pytest.approx(inst.score)
        assert hyp.pose.pose.orientation.w == 1.0
        center, size = (det.bbox.center.position.x, det.bbox.center.position.y), (
            det.bbox.size_x, det.bbox.size_y)
        if inst.x_max < inst.x_min:
            assert size == (0.0, 0.0)  # the empty mask
            continue
        assert center == ((inst.x_min + inst.x_max) / 2, (inst.y_min + inst.y_max) / 2)
        assert size == (inst.x_max - inst.x_min + 1, inst.y_max - inst.y_min + 1)
        assert det.bbox.center.theta == 0.0
    assert box_2d(seg.instances[2]) == (14.0, 10.0, 1.0, 1.0), "a one-pixel box"
    assert box_2d(seg.instances[0]) == (5.5, 3.5, 6.0, 4.0)

    # Tracked: the track id is the id; an untracked instance (0) keeps <request_id>_<index>.
    mark_tracked(seg, [12, 0, 40, 41])
    ids = [d.id for d in detections_2d(seg, kit).detections]
    assert ids == ["12", "q7_1", "40", "41"]
    assert detection_id("t3", 2, 0) == "t3_2" and detection_id("t3", 2, 9) == "9"


def test_detections_3d_and_transforms_only_for_objects_with_3d():
    kit = RosbagsKit()
    seg = _seg(kit, _masks())
    msg = _roundtrip(detections_3d(seg, kit))
    assert msg.header.frame_id == "cam_optical" and msg.header.stamp.sec == 77
    assert [d.id for d in msg.detections] == ["q7_0", "q7_2"], "only the has_3d instances"
    for det, inst in zip(msg.detections, [seg.instances[0], seg.instances[2]], strict=True):
        assert det.header.frame_id == inst.frame_id_3d == "cam_optical"
        (hyp,) = det.results
        assert hyp.hypothesis.class_id == QUERY
        assert hyp.hypothesis.score == pytest.approx(inst.score)
        p, q = hyp.pose.pose.position, hyp.pose.pose.orientation
        assert (p.x, p.y, p.z) == (inst.centroid.x, inst.centroid.y, inst.centroid.z)
        assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
        c, s = det.bbox.center, det.bbox.size
        assert (c.position.x, c.position.y, c.position.z) == (
            inst.box_center.x, inst.box_center.y, inst.box_center.z)
        assert c.orientation.w == 1.0
        assert (s.x, s.y, s.z) == (inst.size.x, inst.size.y, inst.size.z)

    transforms = object_transforms(seg, kit, "stamp/")
    tf = _roundtrip(tf_message(transforms, kit))
    assert [t.child_frame_id for t in tf.transforms] == ["stamp/q7_0", "stamp/q7_2"]
    for t, inst in zip(tf.transforms, [seg.instances[0], seg.instances[2]], strict=True):
        assert t.header.frame_id == "cam_optical"
        assert (t.header.stamp.sec, t.header.stamp.nanosec) == (77, 123)
        v, r = t.transform.translation, t.transform.rotation
        assert (v.x, v.y, v.z) == (inst.centroid.x, inst.centroid.y, inst.centroid.z)
        assert (r.x, r.y, r.z, r.w) == (0.0, 0.0, 0.0, 1.0)
    mark_tracked(seg, [5, 6, 7, 8])
    assert [t.child_frame_id for t in object_transforms(seg, kit, "robot/")] == [
        "robot/5", "robot/7"]

    for inst in seg.instances:
        inst.has_3d = False
    assert detections_3d(seg, kit) is None and object_transforms(seg, kit, "stamp/") == []


def test_the_node_kit_builds_the_same_messages():
    """RclpyKit (the node's) and RosbagsKit (the bag's) give equal field values."""
    pytest.importorskip("vision_msgs.msg")
    pytest.importorskip("tf2_msgs.msg")
    pytest.importorskip("stamp_ros.msg")
    from std_msgs.msg import Header

    from stamp_ros.ros.kit import rclpy_kit

    masks = _masks()
    bag_kit, ros_kit = RosbagsKit(), rclpy_kit()
    bag_seg = _seg(bag_kit, masks)
    ros_header = Header(frame_id="cam")
    ros_header.stamp.sec, ros_header.stamp.nanosec = 77, 123
    result = StampResult(text="here", instances=[_inst(m, 0.5 + 0.1 * k)
                                                 for k, m in enumerate(masks)],
                         image_size=(W, H), grid_size=(2, 2), timings_ms={})
    ros_seg = segmentation_msg(request_id="q7", query=QUERY, header=ros_header, result=result,
                               model="m", wait_ms=0.0, convert_ms=0.0,
                               objects=[_obj(1.5), None, _obj(2.5), None],
                               frame_id_3d="cam_optical", kit=ros_kit)

    for build in (lambda s, k: detections_2d(s, k), lambda s, k: detections_3d(s, k),
                  lambda s, k: labels_msg(s, k, (H, W), masks),
                  lambda s, k: tf_message(object_transforms(s, k, "stamp/"), k)):
        ours, node = flat_fields(build(bag_seg, bag_kit)), flat_fields(build(ros_seg, ros_kit))
        assert ours.keys() == node.keys()
        assert ours == node
