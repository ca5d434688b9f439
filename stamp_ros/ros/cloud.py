"""Points and :class:`~stamp_ros.spatial.geometry.Object3D` -> ``PointCloud2`` and ``MarkerArray``.

Message building only, no node: the node, the CLI and tests share it, and it stays
testable without spinning anything. ``sensor_msgs_py`` is not on PyPI, so the cloud is
packed here with a numpy structured dtype -- one ``tobytes`` instead of a per-point
Python loop, which matters at camera rate.

Every value is converted to the exact Python type the message field declares (``float``,
``int``, ``bool``): Humble's generated setters assert on types and reject e.g.
``numpy.float32``, even where newer distributions accept them silently.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from stamp_ros.render.palette import color_for
from stamp_ros.spatial.geometry import Object3D

__all__ = [
    "CLOUD_DTYPE",
    "MARKERS_PER_INSTANCE",
    "cloud_fields",
    "cloud_to_points",
    "objects_to_markers",
    "points_to_cloud",
]

# x, y, z as float32 (what RViz and PCL expect) plus the instance index as uint32, so a
# client can split the cloud per object and RViz can colour by the "instance" channel.
# Explicit little-endian so the bytes (and ``is_bigendian = False``) are right on any host.
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("instance", "<u4")])

# Marker ids are ``MARKERS_PER_INSTANCE * instance + k``: stable per instance index, so
# RViz replaces (rather than duplicates) an object's markers from one result to the next.
MARKERS_PER_INSTANCE = 3

_NUMPY_OF_FIELD = {
    PointField.INT8: np.dtype("i1"),
    PointField.UINT8: np.dtype("u1"),
    PointField.INT16: np.dtype("i2"),
    PointField.UINT16: np.dtype("u2"),
    PointField.INT32: np.dtype("i4"),
    PointField.UINT32: np.dtype("u4"),
    PointField.FLOAT32: np.dtype("f4"),
    PointField.FLOAT64: np.dtype("f8"),
}


def cloud_fields() -> list[PointField]:
    """The ``PointField`` layout matching :data:`CLOUD_DTYPE` (fresh objects each call)."""
    kinds = {"x": PointField.FLOAT32, "y": PointField.FLOAT32, "z": PointField.FLOAT32,
             "instance": PointField.UINT32}
    return [
        PointField(name=name, offset=int(CLOUD_DTYPE.fields[name][1]), datatype=kinds[name],
                   count=1)
        for name in CLOUD_DTYPE.names
    ]


def points_to_cloud(
    points_list: Sequence[np.ndarray | None],
    header: Header,
    instance_ids: Sequence[int] | None = None,
) -> PointCloud2:
    """One unorganised ``PointCloud2`` holding every instance's points.

    ``instance`` is the position in ``points_list`` (or ``instance_ids[i]``), matching the
    instance order of the Segmentation result; ``None`` or empty entries (instances without
    depth) contribute no points but keep the numbering. Non-finite rows are dropped so
    ``is_dense = True`` is a true statement -- consumers skip NaN checks when it is set.
    """
    if instance_ids is not None and len(instance_ids) != len(points_list):
        raise ValueError(
            f"instance_ids has {len(instance_ids)} entries for {len(points_list)} point sets"
        )
    chunks = []
    for i, pts in enumerate(points_list):
        if pts is None:
            continue
        p = np.asarray(pts, dtype=np.float32).reshape(-1, 3)
        p = p[np.isfinite(p).all(axis=1)]
        if p.shape[0] == 0:
            continue
        chunk = np.empty(p.shape[0], dtype=CLOUD_DTYPE)
        chunk["x"], chunk["y"], chunk["z"] = p[:, 0], p[:, 1], p[:, 2]
        chunk["instance"] = i if instance_ids is None else int(instance_ids[i])
        chunks.append(chunk)
    packed = np.concatenate(chunks) if chunks else np.empty(0, dtype=CLOUD_DTYPE)

    msg = PointCloud2()
    msg.header = header
    msg.height = 1
    msg.width = int(packed.shape[0])
    msg.fields = cloud_fields()
    msg.is_bigendian = False
    msg.point_step = int(CLOUD_DTYPE.itemsize)
    msg.row_step = int(CLOUD_DTYPE.itemsize * packed.shape[0])
    # array.array('B') is stored by the setter as is; a list or bytes would be walked
    # element by element (slow on Humble, which validates every byte).
    msg.data = array.array("B", packed.tobytes())
    msg.is_dense = True
    return msg


def cloud_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """``PointCloud2`` -> (xyz (N, 3) float32, instance ids (N,) uint32).

    Reads the layout from ``msg.fields`` rather than assuming ours, so it also accepts
    clouds from other producers (padding, big-endian, organised, float ``instance``);
    a cloud without an ``instance`` field gets id 0 everywhere.
    """
    by_name = {f.name: f for f in msg.fields}
    missing = [n for n in ("x", "y", "z") if n not in by_name]
    if missing:
        raise ValueError(f"PointCloud2 lacks field(s) {missing}")
    n_points = int(msg.width) * int(msg.height)
    if n_points == 0:
        return np.empty((0, 3), dtype=np.float32), np.empty(0, dtype=np.uint32)

    order = ">" if msg.is_bigendian else "<"
    wanted = [n for n in ("x", "y", "z", "instance") if n in by_name]
    dtype = np.dtype(
        {
            "names": wanted,
            "formats": [_NUMPY_OF_FIELD[by_name[n].datatype].newbyteorder(order) for n in wanted],
            "offsets": [int(by_name[n].offset) for n in wanted],
            "itemsize": int(msg.point_step),
        }
    )
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    row_bytes = int(msg.width) * int(msg.point_step)
    row_step = int(msg.row_step) or row_bytes
    if raw.size < row_step * (int(msg.height) - 1) + row_bytes:
        raise ValueError(
            f"PointCloud2 data has {raw.size} bytes, too few for {msg.height}x{msg.width} "
            f"points of {msg.point_step} bytes"
        )
    if row_step != row_bytes:  # rows padded: drop the padding before viewing as points
        rows = [raw[r * row_step : r * row_step + row_bytes] for r in range(int(msg.height))]
        raw = np.concatenate(rows)
    pts = raw[: n_points * int(msg.point_step)].view(dtype)
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float32)
    if "instance" in by_name:
        ids = pts["instance"].astype(np.uint32)
    else:
        ids = np.zeros(n_points, dtype=np.uint32)
    return xyz, ids


def _duration(seconds: float) -> Duration:
    """Non-negative seconds -> ``Duration``; 0 means "forever" to RViz."""
    seconds = max(float(seconds), 0.0)
    sec = math.floor(seconds)
    nanosec = min(round((seconds - sec) * 1e9), 999_999_999)
    return Duration(sec=int(min(sec, 2**31 - 1)), nanosec=int(nanosec))


def _color(index: int, alpha: float) -> ColorRGBA:
    r, g, b = color_for(index)
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=float(alpha))


def _point(v: np.ndarray) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _marker(header: Header, ns: str, marker_id: int, kind: int, lifetime: Duration) -> Marker:
    m = Marker()
    m.header = header
    m.ns = ns
    m.id = int(marker_id)
    m.type = int(kind)
    m.action = Marker.ADD
    m.pose = Pose(orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
    m.lifetime = lifetime
    m.frame_locked = False
    return m


def objects_to_markers(
    objects: Sequence[Object3D | None],
    labels: Sequence[str],
    header: Header,
    ns: str = "stamp",
    lifetime_s: float = 0.0,
    *,
    box_alpha: float = 0.35,
    text_height_m: float = 0.05,
) -> MarkerArray:
    """RViz markers for a result: per instance a centroid sphere, a box and a label.

    The array starts with a ``DELETEALL`` so that objects from the previous result that
    are absent now disappear instead of lingering until their lifetime runs out
    (``lifetime_s = 0`` keeps markers until replaced, the right default for results that
    arrive irregularly). Instance ``i`` uses ``color_for(i)``, the overlay's colour, and
    marker ids ``3i, 3i+1, 3i+2``; ``None`` objects (no depth) are skipped but keep their
    index so colours and ids still line up with the 2D result.
    """
    lifetime = _duration(lifetime_s)
    out = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.ns = ns
    clear.id = 0
    clear.action = Marker.DELETEALL
    out.markers.append(clear)

    for i, obj in enumerate(objects):
        if obj is None:
            continue
        base = MARKERS_PER_INSTANCE * i
        size = np.asarray(obj.size, dtype=np.float64)
        centre = np.asarray(obj.box_center, dtype=np.float64)

        # Sphere: visible next to the box whatever the object's size, never swallowing it.
        sphere = _marker(header, ns, base, Marker.SPHERE, lifetime)
        sphere.pose.position = _point(obj.centroid)
        d = float(np.clip(0.25 * float(size.max()), 0.02, 0.08))
        sphere.scale = Vector3(x=d, y=d, z=d)
        sphere.color = _color(i, 1.0)
        out.markers.append(sphere)

        # Box: a seen-from-the-front box is flat along z; RViz hides zero-thickness cubes,
        # so give every side at least 5 mm.
        cube = _marker(header, ns, base + 1, Marker.CUBE, lifetime)
        cube.pose.position = _point(centre)
        sx, sy, sz = (max(float(s), 0.005) for s in size)
        cube.scale = Vector3(x=sx, y=sy, z=sz)
        cube.color = _color(i, box_alpha)
        out.markers.append(cube)

        # Label just above the box; "up" is -y in the optical frame.
        text = _marker(header, ns, base + 2, Marker.TEXT_VIEW_FACING, lifetime)
        above = np.array([centre[0], float(obj.box_min[1]) - text_height_m, centre[2]])
        text.pose.position = _point(above)
        text.scale = Vector3(x=0.0, y=0.0, z=float(text_height_m))
        text.color = _color(i, 1.0)
        label = labels[i] if i < len(labels) and labels[i] else f"#{i}"
        text.text = str(label)
        out.markers.append(text)
    return out

