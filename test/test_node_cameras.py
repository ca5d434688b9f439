"""Several cameras through one model, depth -> 3D outputs, and diagnostics, over real ROS 2."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from feature_helpers import diag_values, wait_diag
from node_harness import image_msg, make_frame, start_node

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

    # Generous freshness: this test is about which camera's frame answers, not about age.
    start_node(processes, ros_client, checkpoint, cameras="['front', 'wrist']",
               max_frame_age=600.0, frame_timeout=60.0)
    front_results = ros_client.subscribe(Segmentation, "/stamp_node/front/result")
    wrist_results = ros_client.subscribe(Segmentation, "/stamp_node/wrist/result")
    pubs = {cam: ros_client.publisher(Image, f"/{cam}/image") for cam in ("front", "wrist")}
    query = ros_client.publisher(String, "/front/query")
    for pub in (*pubs.values(), query):
        ros_client.wait_for_subscribers(pub)
    pubs["front"].publish(image_msg(make_frame(120, 90, seed=1), stamp_sec=10, frame_id="front"))
    pubs["wrist"].publish(image_msg(make_frame(80, 60, seed=2), stamp_sec=20, frame_id="wrist"))
    query.publish(String(data="segment the square"))  # waits for a frame if none arrived yet
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

    start_node(processes, ros_client, checkpoint)
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
    depth = np.full((h, w), 1500, np.uint16)  # a wall 1.5 m away, in millimetres
    # Colour, depth and intrinsics travel on three topics: ask until a result shows that the
    # node had all three (3D filled), each round with a new stamp pairing frame and depth.
    deadline = time.monotonic() + 90
    for stamp in itertools.count(30):
        info_pub.publish(_camera_info(w, h, stamp))
        depth_msg = array_to_image_msg(depth, "16UC1")
        depth_msg.header.frame_id, depth_msg.header.stamp.sec = "cam_optical", stamp
        depth_pub.publish(depth_msg)
        img_pub.publish(image_msg(make_frame(w, h), stamp_sec=stamp, frame_id="cam_optical"))
        query.publish(String(data="segment the square"))
        res = results.wait_for(stamp - 29, timeout=60)[-1]
        assert res.success, res.error
        if res.instances[0].has_3d or time.monotonic() > deadline:
            break
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


def test_diagnostics_values_follow_the_traffic(processes, ros_client, checkpoint):
    """Not only the keys: the rates, the latency percentiles and the count of refused requests
    move with what the node is sent, and fall back when the traffic stops."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rcl_interfaces.srv import SetParameters
    from sensor_msgs.msg import Image
    from stamp_ros.msg import Segmentation
    from stamp_ros.srv import Segment
    from std_msgs.msg import String

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics", ros_client.reliable(500))
    results = ros_client.subscribe(Segmentation, "/stamp_node/result", ros_client.reliable(50))
    proc = start_node(processes, ros_client, checkpoint, stats_period=0.5, max_pending=1,
                      frame_timeout=2.0)
    idle = wait_diag(diags, "an idle report", lambda v: True)
    for key in ("input_rate_hz", "result_rate_hz", "queue_depth", "dropped_frames",
                "rejected_requests", "latency_p50_ms", "latency_p90_ms", "last_error"):
        assert key in idle, key
    assert float(idle["input_rate_hz"]) == 0.0 and float(idle["result_rate_hz"]) == 0.0, idle
    assert float(idle["latency_p50_ms"]) == 0.0 and idle["rejected_requests"] == "0", idle
    assert "stats:" in processes.output(proc)

    img_pub = ros_client.publisher(Image, "/image")
    query_pub = ros_client.publisher(String, "/query")
    for pub in (img_pub, query_pub):
        ros_client.wait_for_subscribers(pub)
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            img_pub.publish(image_msg(make_frame(seed=i % 3), stamp_sec=100 + i))
            stop.wait(0.1)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_diag(diags, "input_rate_hz > 0 while frames stream",
                   lambda v: float(v["input_rate_hz"]) > 0)
        req = Segment.Request()
        req.query = "segment the square"
        for _ in range(3):
            res = ros_client.call(Segment, "/stamp_node/segment", req, timeout=120).result
            assert res.success, res.error
        busy = wait_diag(diags, "result_rate_hz > 0 and latencies after results",
                          lambda v: float(v["result_rate_hz"]) > 0)
        assert float(busy["latency_p50_ms"]) > 0, busy
        assert float(busy["latency_p90_ms"]) >= float(busy["latency_p50_ms"]), busy
    finally:
        stop.set()
        streamer.join(timeout=10)
    wait_diag(diags, "input_rate_hz back to 0 once the stream stopped",
               lambda v: float(v["input_rate_hz"]) == 0.0)

    # Refusals: no frame younger than max_frame_age 0 will come, so the first query holds the
    # model for frame_timeout, one more may wait (max_pending 1), the rest are queue full.
    (res,) = ros_client.call(SetParameters, "/stamp_node/set_parameters",
                             _set_double("max_frame_age", 0.0), timeout=30).results
    assert res.successful, res.reason
    for i in range(5):
        query_pub.publish(String(data=f"segment thing {i}"))
    answered = results.wait_for(5, timeout=60, where=lambda r: r.request_id.startswith("q"))
    full = [r for r in answered if "queue full" in r.error]
    assert 3 <= len(full) <= 4, [r.error for r in answered]
    assert all(not r.success for r in answered)
    wait_diag(diags, f"rejected_requests {len(full)}",
               lambda v: v["rejected_requests"] == str(len(full)))
    warn = diags.wait_for(1, timeout=30, where=lambda a: a.status[0].level == DiagnosticStatus.WARN)
    values = diag_values(warn[0])
    assert int(values["errors"]) > 0 and values["last_error"], values


def _set_double(name: str, value: float):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    return SetParameters.Request(parameters=[Parameter(name=name, value=v)])
