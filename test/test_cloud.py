"""PointCloud2 / MarkerArray building with real ROS 2 message classes.

Field type checking is switched on (as Humble always does) so that a numpy scalar or an
int where a float is declared fails here rather than on a robot running an older distro.
"""

from __future__ import annotations

import os

os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1"  # before any message import

import array
import sys

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from stamp_ros.render.palette import PALETTE, color_for
from stamp_ros.ros.cloud import (
    cloud_to_points,
    objects_to_markers,
    points_to_cloud,
)
from stamp_ros.spatial.geometry import summarise_points

_MESSAGES = (PointCloud2, PointField, Header, Time, Duration, Marker, MarkerArray, Point,
             Pose, Quaternion, Vector3, ColorRGBA)


@pytest.fixture(autouse=True)
def _check_fields(monkeypatch):
    """Keep checking on even if another test module imported the messages first.

    The generated modules read the environment variable once, at import, so the line at
    the top of this file alone depends on test order.
    """
    for cls in _MESSAGES:
        monkeypatch.setattr(
            sys.modules[cls.__module__], "ros_python_check_fields", "1", raising=False
        )


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_color_optical_frame")


def test_field_checking_is_active():
    with pytest.raises(AssertionError):
        Point(x=np.float32(1.0))


def _instances() -> list[np.ndarray | None]:
    rng = np.random.default_rng(0)
    return [
        rng.normal(size=(50, 3)).astype(np.float32),
        None,  # instance without depth
        np.empty((0, 3), np.float32),
        (rng.normal(size=(7, 3)) + 2).astype(np.float64),
    ]


def test_cloud_round_trip(header):
    pts = _instances()
    msg = points_to_cloud(pts, header)
    xyz, ids = cloud_to_points(msg)
    np.testing.assert_array_equal(xyz, np.vstack([pts[0], pts[3].astype(np.float32)]))
    np.testing.assert_array_equal(ids, [0] * 50 + [3] * 7)
    assert xyz.dtype == np.float32 and ids.dtype == np.uint32
    # And through the real wire format.
    back = deserialize_message(serialize_message(msg), PointCloud2)
    xyz2, ids2 = cloud_to_points(back)
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(ids2, ids)
    assert back.header.frame_id == header.frame_id


def test_cloud_field_layout(header):
    msg = points_to_cloud(_instances(), header)
    layout = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert layout == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("instance", 12, PointField.UINT32, 1),
    ]
    assert msg.point_step == 16
    assert (msg.height, msg.width) == (1, 57)
    assert msg.row_step == 16 * 57
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert len(msg.data) == msg.row_step
    assert msg.is_dense is True and msg.is_bigendian is False
    assert msg.header.stamp.sec == 12


def test_cloud_custom_ids_and_non_finite_dropped(header):
    pts = np.array([[0, 0, 1], [np.nan, 0, 1], [1, 2, np.inf], [1, 2, 3]], np.float32)
    msg = points_to_cloud([pts], header, instance_ids=[7])
    xyz, ids = cloud_to_points(msg)
    np.testing.assert_array_equal(xyz, [[0, 0, 1], [1, 2, 3]])
    np.testing.assert_array_equal(ids, [7, 7])
    with pytest.raises(ValueError):
        points_to_cloud([pts], header, instance_ids=[1, 2])


def test_empty_cloud_is_valid(header):
    for pts in ([], [None, np.empty((0, 3))]):
        msg = points_to_cloud(pts, header)
        assert (msg.width, msg.height, msg.row_step, len(msg.data)) == (0, 1, 0, 0)
        assert len(msg.fields) == 4 and msg.point_step == 16
        back = deserialize_message(serialize_message(msg), PointCloud2)
        xyz, ids = cloud_to_points(back)
        assert xyz.shape == (0, 3) and ids.shape == (0,)


def test_cloud_to_points_reads_foreign_layouts():
    # Organised 2x2, big-endian, padded points (20 bytes), padded rows, float instance.
    dt = np.dtype({"names": ["instance", "x", "y", "z"],
                   "formats": [">f4", ">f4", ">f4", ">f4"],
                   "offsets": [0, 4, 8, 12], "itemsize": 20})
    pts = np.zeros(4, dt)
    pts["x"], pts["y"], pts["z"] = [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]
    pts["instance"] = [0, 1, 1, 2]
    rows = [pts[:2].tobytes() + b"\0" * 8, pts[2:].tobytes() + b"\0" * 8]
    fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
              for n, o in (("instance", 0), ("x", 4), ("y", 8), ("z", 12))]
    msg = PointCloud2(height=2, width=2, fields=fields, is_bigendian=True, point_step=20,
                      row_step=48, data=array.array("B", b"".join(rows)), is_dense=True)
    xyz, ids = cloud_to_points(msg)
    np.testing.assert_array_equal(xyz, [[1, 5, 9], [2, 6, 10], [3, 7, 11], [4, 8, 12]])
    np.testing.assert_array_equal(ids, [0, 1, 1, 2])
    # No instance field: every point is instance 0.
    msg.fields = fields[1:]
    np.testing.assert_array_equal(cloud_to_points(msg)[1], [0, 0, 0, 0])
    msg.fields = fields[:2]
    with pytest.raises(ValueError):
        cloud_to_points(msg)


def _objects():
    rng = np.random.default_rng(3)
    a = summarise_points(rng.uniform([-0.1, -0.1, 1.0], [0.1, 0.05, 1.0], (200, 3)))
    b = summarise_points(rng.uniform([0.3, 0.0, 2.0], [0.6, 0.2, 2.3], (200, 3)))
    return [a, None, b]


def test_markers_layout(header):
    objs = _objects()
    arr = objects_to_markers(objs, ["mug", "drawer", ""], header, lifetime_s=1.5)
    assert isinstance(arr, MarkerArray)
    ms = arr.markers
    assert len(ms) == 1 + 3 * 2
    assert ms[0].action == Marker.DELETEALL
    assert [(m.id, m.type) for m in ms[1:]] == [
        (0, Marker.SPHERE), (1, Marker.CUBE), (2, Marker.TEXT_VIEW_FACING),
        (6, Marker.SPHERE), (7, Marker.CUBE), (8, Marker.TEXT_VIEW_FACING),
    ]
    assert all(m.ns == "stamp" and m.header.frame_id == header.frame_id for m in ms)
    assert all(m.action == Marker.ADD for m in ms[1:])
    assert all((m.lifetime.sec, m.lifetime.nanosec) == (1, 500_000_000) for m in ms[1:])
    assert [m.text for m in ms[1:] if m.type == Marker.TEXT_VIEW_FACING] == ["mug", "#2"]

    sphere, cube = ms[1], ms[2]
    a = objs[0]
    p = sphere.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], a.centroid)
    c = cube.pose.position
    np.testing.assert_allclose([c.x, c.y, c.z], a.box_center)
    np.testing.assert_allclose([cube.scale.x, cube.scale.y], a.size[:2])
    assert cube.scale.z == pytest.approx(0.005)  # flat box made visible
    assert 0 < cube.color.a < 1 and sphere.color.a == pytest.approx(1.0)
    # Label above (smaller y in the optical frame) the box.
    assert ms[3].pose.position.y < a.box_min[1]
    # Serialises as a real message.
    back = deserialize_message(serialize_message(arr), MarkerArray)
    assert len(back.markers) == 7


def test_marker_colours_follow_palette(header):
    arr = objects_to_markers(_objects(), ["a", "b", "c"], header)
    for m in arr.markers[1:]:
        idx = m.id // 3
        rgb = np.array([m.color.r, m.color.g, m.color.b]) * 255
        np.testing.assert_allclose(rgb, color_for(idx), atol=1e-3)
    spheres = [m for m in arr.markers if m.type == Marker.SPHERE]
    assert spheres[0].color.r != spheres[1].color.r or spheres[0].color.g != spheres[1].color.g


def test_markers_empty_is_just_deleteall(header):
    arr = objects_to_markers([], [], header, ns="other")
    assert len(arr.markers) == 1
    assert arr.markers[0].action == Marker.DELETEALL and arr.markers[0].ns == "other"
    assert len(objects_to_markers([None, None], [], header).markers) == 1


def test_palette_is_shared_table():
    assert len(PALETTE) >= 8
    assert len(set(PALETTE)) == len(PALETTE)
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
               for c in PALETTE)
    assert color_for(len(PALETTE) + 1) == PALETTE[1]
