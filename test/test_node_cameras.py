"""Several cameras through one model, depth -> 3D outputs, and diagnostics, over real ROS 2."""

from __future__ import annotations

import time

import numpy as np
import pytest
from node_harness import image_msg, make_frame, node_args, wait_ready

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-tiny", seed=0,
                                answer="Sure, it is here: <|seg|>")


def test_two_cameras_share_one_model(processes, ros_client, checkpoint):
    from sensor_msgs.msg import Image
    from stamp_ros.msg import Segmentation
    from stamp_ros.srv import Segment
    from std_msgs.msg import String

    proc = processes.start(*node_args(checkpoint, cameras="['front', 'wrist']"), name="node")
    wait_ready(ros_client, processes, proc)
    front_results = ros_client.subscribe(Segmentation, "/stamp_node/front/result")
    wrist_results = ros_client.subscribe(Segmentation, "/stamp_node/wrist/result")
    pubs = {cam: ros_client.publisher(Image, f"/{cam}/image") for cam in ("front", "wrist")}
    query = ros_client.publisher(String, "/front/query")
    for pub in (*pubs.values(), query):
        ros_client.wait_for_subscribers(pub)
    pubs["front"].publish(image_msg(make_frame(120, 90, seed=1), stamp_sec=10, frame_id="front"))
    pubs["wrist"].publish(image_msg(make_frame(80, 60, seed=2), stamp_sec=20, frame_id="wrist"))
    time.sleep(0.5)
    query.publish(String(data="segment the square"))
    (res,) = front_results.wait_for(1, timeout=60)
    assert res.success, res.error
    assert (res.header.frame_id, res.header.stamp.sec) == ("front", 10)
    assert res.instances[0].mask.width == 120

    req = Segment.Request()
    req.query, req.camera = "segment the square", "wrist"
    res = ros_client.call(Segment, "/stamp_node/segment", req, timeout=120).result
    assert res.success, res.error
    assert (res.header.frame_id, res.header.stamp.sec) == ("wrist", 20)
    assert wrist_results.wait_for(1, timeout=30)[0].header.frame_id == "wrist"

    req.camera = "roof"
    res = ros_client.call(Segment, "/stamp_node/segment", req, timeout=60).result
    assert not res.success and "unknown camera 'roof'" in res.error
    assert "'front'" in res.error and "'wrist'" in res.error


def _camera_info(width: int, height: int, stamp_sec: int):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.frame_id, info.header.stamp.sec = "cam_optical", stamp_sec
    info.width, info.height = width, height
    info.k = [100.0, 0.0, width / 2, 0.0, 100.0, height / 2, 0.0, 0.0, 1.0]
    return info


def test_depth_gives_3d_fields_points_and_markers(processes, ros_client, checkpoint):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from stamp_ros.msg import Segmentation
    from std_msgs.msg import String
    from visualization_msgs.msg import Marker, MarkerArray

    from stamp_ros.ros.cloud import cloud_to_points
    from stamp_ros.testing.images import array_to_image_msg

    proc = processes.start(*node_args(checkpoint), name="node")
    wait_ready(ros_client, processes, proc)
    results = ros_client.subscribe(Segmentation, "/stamp_node/result")
    clouds = ros_client.subscribe(PointCloud2, "/stamp_node/points")
    markers = ros_client.subscribe(MarkerArray, "/stamp_node/markers")
    img_pub = ros_client.publisher(Image, "/image")
    depth_pub = ros_client.publisher(Image, "/depth")
    info_pub = ros_client.publisher(CameraInfo, "/camera_info")
    query = ros_client.publisher(String, "/query")
    for pub in (img_pub, depth_pub, info_pub, query):
        ros_client.wait_for_subscribers(pub)
    w, h = 160, 120
    info_pub.publish(_camera_info(w, h, 30))
    depth = np.full((h, w), 1500, np.uint16)  # a wall 1.5 m away, in millimetres
    depth_msg = array_to_image_msg(depth, "16UC1")
    depth_msg.header.frame_id, depth_msg.header.stamp.sec = "cam_optical", 30
    depth_pub.publish(depth_msg)
    img_pub.publish(image_msg(make_frame(w, h), stamp_sec=30, frame_id="cam_optical"))
    time.sleep(0.5)
    query.publish(String(data="segment the square"))
    (res,) = results.wait_for(1, timeout=60)
    assert res.success, res.error
    inst = res.instances[0]
    assert inst.area > 0, "the tiny checkpoint should produce a non-empty mask"
    assert inst.has_3d and inst.frame_id_3d == "cam_optical"
    assert inst.centroid.z == pytest.approx(1.5, abs=1e-3)
    assert inst.size.z == pytest.approx(0.0, abs=1e-3) and inst.num_points > 0
    cloud = clouds.wait_for(1, timeout=30)[0]
    xyz, ids = cloud_to_points(cloud)
    assert cloud.header.frame_id == "cam_optical" and len(xyz) == inst.num_points
    assert np.allclose(xyz[:, 2], 1.5) and set(ids.tolist()) == {0}
    arr = markers.wait_for(1, timeout=30)[0]
    kinds = [m.type for m in arr.markers]
    assert Marker.SPHERE in kinds and Marker.CUBE in kinds and Marker.TEXT_VIEW_FACING in kinds


def test_diagnostics_report_rates_and_queue(processes, ros_client, checkpoint):
    from diagnostic_msgs.msg import DiagnosticArray

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics")
    proc = processes.start(*node_args(checkpoint, stats_period=0.5), name="node")
    wait_ready(ros_client, processes, proc)
    arrays = diags.wait_for(2, timeout=30)
    values = {kv.key: kv.value for kv in arrays[-1].status[0].values}
    for key in ("input_rate_hz", "result_rate_hz", "queue_depth", "dropped_frames",
                "latency_p50_ms", "latency_p90_ms", "last_error"):
        assert key in values, key
    assert "stats:" in processes.output(proc)
