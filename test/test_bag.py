"""``stamp-ros bag``: recorded bags in, annotated MCAP bags and videos out, without ROS.

The input bags are written here with rosbags from a real photo (../shared/data/horses.jpg) and
replayed with the tiny test checkpoint at small pixel limits. The outputs are read back with
rosbags and with the ``mcap`` reader. Nothing here needs rclpy; the one subprocess run blocks
every ROS import to prove it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from message_fields import flat_fields
from PIL import Image as PILImage
from thread_budget import torch_threads, with_threads

pytest.importorskip("rosbags")

from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from stamp_ros.bag.interfaces import RosbagsKit, msg_dir, typestore
from stamp_ros.cli.main import EXIT_INPUT, main
from stamp_ros.testing.checkpoint import make_test_checkpoint

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "horses.jpg"
SMALL = ["--min-pixels", str(56 * 56), "--max-pixels", str(112 * 112), "--device", "cpu"]
W, H = 96, 64
S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S  # bag times look like a real recording's
ANSWER = "Here: <|seg|> and <|seg|>"
TEXT = "Here:  and"
QUERY = "Please segment the white horse in the image."
BAG_THREADS = 1
"""torch threads of a bag child held to ``segment`` in this process, which runs at the same."""

# Imported by nothing on the bag path; a subprocess with these blocked proves "no ROS needed".
BLOCK_ROS = r"""
import sys
BLOCKED = ("rclpy", "rosidl_parser", "rosidl_runtime_py", "rpyutils", "sensor_msgs",
           "std_msgs", "builtin_interfaces", "geometry_msgs", "visualization_msgs",
           "diagnostic_msgs", "vision_msgs", "tf2_msgs", "stamp_ros.msg", "stamp_ros.srv",
           "stamp_ros.action")
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is blocked: stamp-ros bag must not need ROS")
        return None
sys.meta_path.insert(0, Block())
from stamp_ros.cli.main import main
sys.exit(main())
"""


# --------------------------------------------------------------------------- bag fixtures


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("bag") / "ckpt", answer=ANSWER, seed=2)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    with PILImage.open(PHOTO) as img:
        return np.asarray(img.convert("RGB").resize((W, H), PILImage.BILINEAR))


def frames_of(photo: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` distinct frames: the photo panning sideways, as a moving camera sees it."""
    return [np.ascontiguousarray(np.roll(photo, 3 * i, axis=1)) for i in range(n)]


def _header(t_ns: int, frame_id: str = "camera_color_optical_frame") -> Any:
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](t_ns // S, t_ns % S)
    return types["std_msgs/msg/Header"](stamp, frame_id)


def image_msg(rgb: np.ndarray, stamp_ns: int) -> Any:
    h, w = rgb.shape[:2]
    return typestore().types["sensor_msgs/msg/Image"](
        _header(stamp_ns), h, w, "rgb8", 0, w * 3, np.ascontiguousarray(rgb).reshape(-1))


def jpeg_msg(rgb: np.ndarray, stamp_ns: int) -> Any:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return typestore().types["sensor_msgs/msg/CompressedImage"](
        _header(stamp_ns), "jpeg", np.asarray(data, np.uint8).reshape(-1))


def write_bag(path: Path, messages: list[tuple[str, int, Any]], storage: str = "mcap") -> Path:
    """A rosbag2 of (topic, bag time ns, rosbags message), in the given storage."""
    ts = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns: dict[str, Any] = {}
        for topic, t_ns, msg in sorted(messages, key=lambda m: m[1]):
            msgtype = type(msg).__msgtype__
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], t_ns, ts.serialize_cdr(msg, msgtype))
    return path


def camera_bag(path: Path, frames: list[np.ndarray], *, storage: str = "mcap",
               compressed: bool = False, period_ns: int = S // 10) -> Path:
    topic = "/camera/image/compressed" if compressed else "/camera/image"
    build = jpeg_msg if compressed else image_msg
    return write_bag(path, [(topic, T0 + i * period_ns, build(f, T0 + i * period_ns))
                            for i, f in enumerate(frames)], storage)


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(bag time, decoded message)] of an output bag."""
    ts = typestore()
    out: dict[str, list[tuple[int, Any]]] = {}
    with Reader(path) as reader:
        for conn in reader.connections:
            out.setdefault(conn.topic, [])
        for conn, t_ns, raw in reader.messages():
            out[conn.topic].append((t_ns, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


def pixels(img: Any) -> np.ndarray:
    channels = {"mono8": 1, "rgb8": 3}[img.encoding]
    a = np.asarray(img.data, np.uint8).reshape(img.height, img.width, channels)
    return a[..., 0] if channels == 1 else a


def run_bag(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["bag", *args])
    out, err = capsys.readouterr()
    return code, out, err


def segment_cli(ckpt: Path, rgb: np.ndarray, tmp: Path, query: str, capsys,
                threads: int = 0) -> dict:
    """What ``stamp-ros segment --json`` answers on exactly these pixels (in this process, at
    ``threads`` torch threads when given: a bag child's budget, see thread_budget.py)."""
    if threads:
        with torch_threads(threads):
            return segment_cli(ckpt, rgb, tmp, query, capsys)
    image = tmp / f"frame-{abs(hash(rgb.tobytes()))}.png"
    PILImage.fromarray(rgb).save(image)  # PNG: lossless, the same pixels come back
    capsys.readouterr()
    assert main(["segment", "--model", str(ckpt), "--image", str(image), "--query", query,
                 "--json", *SMALL]) == 0
    return json.loads(capsys.readouterr().out)


def assert_same_as_segment(result: Any, expected: dict) -> None:
    assert result.success, result.error
    assert result.answer == expected["text"]
    assert len(result.instances) == len(expected["instances"])
    for inst, exp in zip(result.instances, expected["instances"], strict=True):
        grid = np.asarray(inst.grid).reshape(inst.grid_height, inst.grid_width)
        np.testing.assert_array_equal(grid, np.asarray(exp["grid"]))
        assert [inst.x_min, inst.y_min, inst.x_max, inst.y_max] == exp["bbox"]
        assert inst.area == exp["area"]


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("stamp-ros: error:"), err
    for needle in needles:
        assert needle in lines[0], err


# --------------------------------------------------------------------------- the full path


def test_cli_subprocess_without_ros_sqlite3_in_mcap_out(ckpt, photo, tmp_path, capsys):
    """The command line in a fresh process with every ROS import blocked: a sqlite3 bag of raw
    rgb8 frames becomes an MCAP bag (result, mask, overlay, copied input) and an MP4."""
    frames = frames_of(photo, 5)
    src = camera_bag(tmp_path / "in", frames, storage="sqlite3")
    out, video = tmp_path / "out", tmp_path / "overlay.mp4"
    env = with_threads(dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)), BAG_THREADS)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_ROS, "bag", str(src), "--image-topic", "/camera/image",
         "--query", QUERY, "--out", str(out), "--copy-input", "--video", str(video),
         "--reanswer-every", "1", "--json", "--model", str(ckpt), *SMALL],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # one JSON object, nothing else on stdout
    assert summary["results"] == 5 and summary["errors"] == 0 and not summary["interrupted"]
    assert summary["mode"] == "continuous" and summary["storage"] == "mcap"
    assert summary["input_storage"] == "sqlite3"
    assert summary["topics"] == {"/stamp/result": 5, "/stamp/mask": 5, "/stamp/overlay": 5,
                                 "/stamp/detections": 5, "/stamp/detections_3d": 0,
                                 "/stamp/labels": 5, "/camera/image": 5}
    assert summary["video_frames"] == 5 and summary["last_answer"] == TEXT
    assert "progress: 1/5 frames" in proc.stderr

    assert sorted(p.suffix for p in out.iterdir()) == [".mcap", ".yaml"]
    bag = read_bag(out)
    results, masks, overlays = bag["/stamp/result"], bag["/stamp/mask"], bag["/stamp/overlay"]
    copied = bag["/camera/image"]
    assert len(results) == len(masks) == len(overlays) == len(copied) == 5
    for i, frame in enumerate(frames):
        t_in = T0 + i * S // 10
        t_res, res = results[i]
        assert t_res == t_in  # logged at the frame's bag time ...
        assert (res.header.stamp.sec, res.header.stamp.nanosec) == (t_in // S, t_in % S)
        assert res.header.frame_id == "camera_color_optical_frame"  # ... with its header
        assert res.request_id == f"c{i + 1}" and res.query == QUERY and res.model == str(ckpt)
        assert res.success and res.answer == TEXT and len(res.instances) == 2
        union = np.zeros((H, W), bool)
        for inst in res.instances:
            m = pixels(inst.mask)
            assert m.shape == (H, W) and set(np.unique(m)) <= {0, 255}
            assert int((m > 0).sum()) == inst.area
            union |= m > 0
        t_mask, mask = masks[i]
        assert t_mask == t_in and mask.header == res.header and mask.encoding == "mono8"
        np.testing.assert_array_equal(pixels(mask) > 0, union)
        t_ov, overlay = overlays[i]
        assert t_ov == t_in and overlay.encoding == "rgb8" and pixels(overlay).shape == (H, W, 3)
        assert copied[i][0] == t_in
        np.testing.assert_array_equal(pixels(copied[i][1]), frame)
        if i in (0, 4):  # the same answer and grids as `segment` on the same pixels
            assert_same_as_segment(res, segment_cli(ckpt, frame, tmp_path, QUERY, capsys,
                                                    threads=BAG_THREADS))

    cap = cv2.VideoCapture(str(video))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == W
        assert int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == H
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0, rel=0.01)  # the bag's rate
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == 5
    finally:
        cap.release()


def test_mcap_output_opens_with_the_mcap_reader(ckpt, photo, tmp_path, capsys):
    mcap_reader = pytest.importorskip("mcap.reader")
    src = camera_bag(tmp_path / "in", frames_of(photo, 3))
    code, _, err = run_bag([str(src), "--image-topic", "/camera/image", "--query", QUERY,
                            "--out", str(tmp_path / "out"), "--model", str(ckpt), *SMALL],
                           capsys)
    assert code == 0, err
    files = list((tmp_path / "out").glob("*.mcap"))
    assert len(files) == 1
    with files[0].open("rb") as f:
        reader = mcap_reader.make_reader(f)
        summary = reader.get_summary()
        assert reader.get_header().profile == "ros2"
        schemas = {s.id: s for s in summary.schemas.values()}
        channels = {c.topic: c for c in summary.channels.values()}
        assert set(channels) == {"/stamp/result", "/stamp/mask", "/stamp/overlay",
                                 "/stamp/detections", "/stamp/detections_3d", "/stamp/labels"}
        seg_schema = schemas[channels["/stamp/result"].schema_id]
        assert seg_schema.name == "stamp_ros/msg/Segmentation" and seg_schema.encoding == "ros2msg"
        # The full definition travels with the bag (Foxglove decodes it without our package).
        assert b"MSG: stamp_ros/Instance" in seg_schema.data
        det_schema = schemas[channels["/stamp/detections"].schema_id]
        assert det_schema.name == "vision_msgs/msg/Detection2DArray"
        assert b"MSG: vision_msgs/BoundingBox2D" in det_schema.data
        counts = summary.statistics.channel_message_counts
        assert {c.topic: counts[c.id] for c in summary.channels.values()} == {
            "/stamp/result": 3, "/stamp/mask": 3, "/stamp/overlay": 3, "/stamp/detections": 3,
            "/stamp/detections_3d": 0, "/stamp/labels": 3}
        ts = typestore()
        seen = 0
        for schema, channel, message in reader.iter_messages(topics=["/stamp/result"]):
            seg = ts.deserialize_cdr(message.data, schema.name)
            assert seg.answer == TEXT and message.log_time == T0 + seen * S // 10
            assert channel.message_encoding == "cdr"
            seen += 1
        assert seen == 3


def test_compressed_mcap_input_reuses_the_answer_like_the_node(ckpt, photo, tmp_path, capsys):
    """JPEG CompressedImage frames from an MCAP bag; continuous mode reuses (teacher-forces)
    the answer for --reanswer-every frames. Output in sqlite3 for once."""
    frames = frames_of(photo, 5)
    src = camera_bag(tmp_path / "in", frames, compressed=True)
    code, out, err = run_bag(
        [str(src), "--image-topic", "/camera/image/compressed", "--query", QUERY,
         "--out", str(tmp_path / "out"), "--reanswer-every", "3", "--storage", "sqlite3",
         "--no-overlay", "--model", str(ckpt), *SMALL], capsys)
    assert code == 0, err
    assert out.startswith("5 results (0 errors) from 5/5 frames")
    assert list((tmp_path / "out").glob("*.db3"))
    bag = read_bag(tmp_path / "out")
    assert "/stamp/overlay" not in bag and len(bag["/stamp/mask"]) == 5
    results = [m for _, m in bag["/stamp/result"]]
    assert [r.answer for r in results] == [TEXT] * 5
    assert [r.answer_reused for r in results] == [False, True, True, False, True]
    assert [r.frame_age_ms for r in results] == [0.0] * 5  # continuous: the frame itself
    # Frame 0 was decoded freely: identical to `segment` on the JPEG's decoded pixels.
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(
        cv2.imencode(".jpg", cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))[1], np.uint8),
        cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert_same_as_segment(results[0], segment_cli(ckpt, decoded, tmp_path, QUERY, capsys))


def test_every_and_max_frames_thin_the_bag(ckpt, photo, tmp_path, capsys):
    src = camera_bag(tmp_path / "in", frames_of(photo, 10))
    code, out, err = run_bag([str(src), "--image-topic", "/camera/image", "--query", QUERY,
                              "--out", str(tmp_path / "a"), "--every", "3", "--json",
                              "--model", str(ckpt), *SMALL], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["frames_selected"] == 4 and data["results"] == 4
    stamps = [t for t, _ in read_bag(tmp_path / "a")["/stamp/result"]]
    assert stamps == [T0 + k * S // 10 for k in (0, 3, 6, 9)]

    code, out, err = run_bag([str(src), "--image-topic", "/camera/image", "--query", QUERY,
                              "--out", str(tmp_path / "b"), "--every", "3", "--max-frames", "2",
                              "--json", "--model", str(ckpt), *SMALL], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["results"] == 2 and data["stopped_at_max_frames"]
    assert [t for t, _ in read_bag(tmp_path / "b")["/stamp/result"]] == [T0, T0 + 3 * S // 10]


# --------------------------------------------------------------------------- once mode


def test_query_topic_pairs_in_bag_time_like_the_node(ckpt, photo, tmp_path, capsys):
    """--query-topic: each query is answered on the newest frame no older than max_frame_age
    at its bag time, or waits up to frame_timeout (bag time) for the next frame."""
    f = frames_of(photo, 3)
    string = typestore().types["std_msgs/msg/String"]

    def at(seconds: float) -> int:
        return T0 + int(seconds * S)

    src = write_bag(tmp_path / "in", [
        ("/query", at(0.5), string("segment before any frame")),   # waits; frame at 1.0
        ("/camera/image", at(1.0), image_msg(f[0], at(1.0))),
        ("/query", at(1.5), string("segment a fresh frame")),      # frame 1.0 is 0.5 s old
        ("/camera/image", at(2.0), image_msg(f[1], at(2.0))),
        ("/query", at(2.5), string("   ")),                         # refused at once
        ("/query", at(3.5), string("segment a stale frame")),       # 2.0 is 1.5 s old: waits
        ("/camera/image", at(5.0), image_msg(f[2], at(5.0))),      # ... and gets this one
        ("/query", at(7.0), string("segment after the camera stopped")),  # times out at 9.0
    ], storage="sqlite3")
    code, out, err = run_bag(
        [str(src), "--image-topic", "/camera/image", "--query-topic", "/query",
         "--out", str(tmp_path / "out"), "--max-frame-age", "1.0", "--frame-timeout", "2.0",
         "--copy-input", "--json", "--model", str(ckpt), *SMALL], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "once" and data["queries"] == 5
    assert data["results"] == 5 and data["errors"] == 2
    bag = read_bag(tmp_path / "out")
    assert len(bag["/query"]) == 5 and len(bag["/camera/image"]) == 3
    results = {m.query: (t, m) for t, m in bag["/stamp/result"]}

    def frame_stamp(m: Any) -> float:
        return m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 - T0 / S

    t, m = results["segment before any frame"]
    assert m.success and m.request_id == "q1" and frame_stamp(m) == pytest.approx(1.0)
    assert t == at(1.0) and m.wait_ms == pytest.approx(500.0)
    t, m = results["segment a fresh frame"]
    assert m.success and m.request_id == "q2" and frame_stamp(m) == pytest.approx(1.0)
    assert t == at(1.5) and m.wait_ms == 0.0  # logged when asked, never before the question
    t, m = results["   "]
    assert not m.success and m.error == "empty query" and m.request_id == "q3"
    assert t == at(2.5) and m.header.stamp.sec == 0 and m.header.frame_id == ""
    t, m = results["segment a stale frame"]
    assert m.success and m.request_id == "q4" and frame_stamp(m) == pytest.approx(5.0)
    assert t == at(5.0) and m.wait_ms == pytest.approx(1500.0)
    assert m.frame_age_ms == pytest.approx(-1500.0)  # it waited for a frame newer than itself
    assert results["segment a fresh frame"][1].frame_age_ms == pytest.approx(500.0)
    assert not m.answer_reused
    t, m = results["segment after the camera stopped"]
    assert not m.success and m.request_id == "q5" and t == at(9.0)
    assert "newest camera frame is 4.00 s old" in m.error and "frame_timeout 2" in m.error
    # Masks and overlays only for successes, with the answered frame's header.
    assert len(bag["/stamp/mask"]) == len(bag["/stamp/overlay"]) == 3
    for (_, mask), (_, overlay) in zip(bag["/stamp/mask"], bag["/stamp/overlay"], strict=True):
        assert mask.header == overlay.header and pixels(overlay).shape == (H, W, 3)
    # The answer on frame 1.0 is the one `segment` gives on those pixels.
    assert_same_as_segment(results["segment a fresh frame"][1],
                           segment_cli(ckpt, f[0], tmp_path, "segment a fresh frame", capsys))


def test_depth_and_camera_info_fill_the_3d_fields(ckpt, photo, tmp_path, capsys):
    types = typestore().types
    frames = frames_of(photo, 3)
    messages = []
    for i, frame in enumerate(frames):
        t = T0 + i * S // 10
        messages.append(("/camera/image", t, image_msg(frame, t)))
        depth = np.full((H, W), 2000, np.uint16)  # 2 m everywhere, in millimetres
        # Recorded 10 ms after its colour frame, same stamp: paired through the look-ahead.
        messages.append(("/camera/depth", t + S // 100, types["sensor_msgs/msg/Image"](
            _header(t), H, W, "16UC1", 0, W * 2, depth.view(np.uint8).reshape(-1))))
    k = np.array([80.0, 0, W / 2, 0, 80.0, H / 2, 0, 0, 1])
    info = types["sensor_msgs/msg/CameraInfo"](
        _header(T0), H, W, "plumb_bob", np.zeros(5), k, np.eye(3).reshape(-1),
        np.zeros(12), 0, 0, types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False))
    messages.append(("/camera/camera_info", T0 - S // 100, info))
    src = write_bag(tmp_path / "in", messages)
    code, _, err = run_bag(
        [str(src), "--image-topic", "/camera/image", "--query", QUERY,
         "--depth-topic", "/camera/depth", "--camera-info-topic", "/camera/camera_info",
         "--tf", "--out", str(tmp_path / "out"), "--model", str(ckpt), *SMALL], capsys)
    assert code == 0, err
    bag = read_bag(tmp_path / "out")
    results = [m for _, m in bag["/stamp/result"]]
    assert len(results) == 3
    lifted = [inst for r in results for inst in r.instances if inst.area > 20]
    assert lifted, "the tiny model should produce some non-trivial masks"
    for inst in lifted:
        assert inst.has_3d and inst.frame_id_3d == "camera_color_optical_frame"
        assert inst.centroid.z == pytest.approx(2.0, abs=1e-3) and inst.num_points > 0
    # The node's ecosystem outputs, one per result at its bag time (3D and TF with 3D only).
    from test_detections import check_2d, check_3d, check_labels, check_tf, stamp

    times = [t for t, _ in bag["/stamp/result"]]
    assert [t for t, _ in bag["/stamp/detections"]] == [t for t, _ in bag["/stamp/labels"]] == times
    with_3d = [r for r in results if any(inst.has_3d for inst in r.instances)]
    assert len(bag["/stamp/detections_3d"]) == len(bag["/tf"]) == len(with_3d) > 0
    for res, (_, dets), (_, labels) in zip(results, bag["/stamp/detections"],
                                           bag["/stamp/labels"], strict=True):
        check_2d(res, dets)
        check_labels(res, labels)
    for res, (_, dets3d), (_, tf) in zip(with_3d, bag["/stamp/detections_3d"], bag["/tf"],
                                         strict=True):
        check_3d(res, dets3d)
        assert {stamp(t) for t in tf.transforms} == {stamp(res)}
        check_tf(res, tf.transforms, "stamp/")


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def good_bag(photo, tmp_path) -> Path:
    return camera_bag(tmp_path / "good", frames_of(photo, 3))


def _bad(args: list[str], capsys, *needles: str) -> None:
    code, out, err = run_bag(args, capsys)
    assert code == EXIT_INPUT, err
    assert out == ""
    assert_one_error_line(err, *needles)


def test_missing_topic_unsupported_type_and_empty_query(good_bag, tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["--out", out, "--model", "/nonexistent-model", *SMALL]
    _bad([str(good_bag), "--image-topic", "/nope", "--query", "x", *base], capsys,
         "--image-topic '/nope' is not in the bag", "/camera/image (sensor_msgs/msg/Image)")
    string_bag = write_bag(tmp_path / "strings", [
        ("/chatter", T0, typestore().types["std_msgs/msg/String"]("hi"))])
    _bad([str(string_bag), "--image-topic", "/chatter", "--query", "x", *base], capsys,
         "has type std_msgs/msg/String", "sensor_msgs/msg/CompressedImage")
    _bad([str(good_bag), "--image-topic", "/camera/image", "--query-topic", "/camera/image",
          *base], capsys, "--query-topic '/camera/image' has type sensor_msgs/msg/Image")
    _bad([str(good_bag), "--image-topic", "/camera/image", "--query", "  ", *base], capsys,
         "query is empty")
    _bad([str(tmp_path / "absent"), "--image-topic", "/camera/image", "--query", "x", *base],
         capsys, "does not exist")
    _bad([str(good_bag), "--image-topic", "/camera/image", "--query", "x", "--depth-topic",
          "/d", *base], capsys, "--camera-info-topic")
    assert not Path(out).exists()  # nothing is created for a refused run


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_corrupt_or_truncated_bag_is_one_line(photo, tmp_path, capsys, storage, damage):
    src = camera_bag(tmp_path / "in", frames_of(photo, 20), storage=storage)
    data_file = next(p for p in src.iterdir() if p.suffix in (".mcap", ".db3"))
    raw = bytearray(data_file.read_bytes())
    if damage == "truncated":  # a recorder that died mid-write
        raw = raw[: len(raw) // 2]
    else:
        for i in range(0, len(raw), 997):
            raw[i] ^= 0x5A
    data_file.write_bytes(bytes(raw))
    _bad([str(src), "--image-topic", "/camera/image", "--query", "x", "--out",
          str(tmp_path / "out"), "--model", "/nonexistent-model"], capsys,
         "cannot open input bag", "corrupt")
    assert not (tmp_path / "out").exists()


def test_damage_mid_stream_keeps_what_was_done(ckpt, tmp_path, capsys):
    """An MCAP bag whose summary is intact but whose third chunk is broken: the frames before
    the damage are in a valid output bag, and the run ends with one error line and exit 2."""
    with PILImage.open(PHOTO) as img:  # ~320 KB frames: the writer closes a chunk every 3
        big = np.asarray(img.convert("RGB").resize((400, 268), PILImage.BILINEAR))
    n, broken = 12, 9
    src = camera_bag(tmp_path / "in", [np.roll(big, 5 * i, axis=1) for i in range(n)])
    data_file = next(src.glob("*.mcap"))
    raw = bytearray(data_file.read_bytes())
    t_broken = T0 + broken * S // 10
    at = raw.find(struct.pack("<QQ", t_broken, t_broken))  # log and publish time of a record
    assert at > 0
    record = at - (1 + 8 + 2 + 4)  # opcode, length, channel id, sequence
    assert raw[record] == 0x05
    raw[record + 1: record + 9] = struct.pack("<Q", 2**40)  # a length past the chunk's end
    data_file.write_bytes(bytes(raw))
    code, out, err = run_bag([str(src), "--image-topic", "/camera/image", "--query", QUERY,
                              "--out", str(tmp_path / "out"), "--json", "--quiet",
                              "--model", str(ckpt), *SMALL], capsys)
    assert code == EXIT_INPUT
    assert_one_error_line(err, "corrupt or truncated", "the output holds the")
    data = json.loads(out)
    assert data["read_error"] and 0 < data["results"] < broken
    assert len(read_bag(tmp_path / "out")["/stamp/result"]) == data["results"]


def test_unwritable_or_existing_output(good_bag, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    base = [str(good_bag), "--image-topic", "/camera/image", "--query", "x",
            "--model", "/nonexistent-model"]
    _bad([*base, "--out", str(blocker / "out")], capsys, "cannot write output bag",
         "is not a directory")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    _bad([*base, "--out", str(existing)], capsys, "exists", "--overwrite")
    _bad([*base, "--out", str(existing), "--overwrite"], capsys, "is not a bag directory")
    assert (existing / "keep.txt").read_text() == "precious"
    _bad([*base, "--out", str(tmp_path / "o"), "--video", str(blocker / "v.mp4")], capsys,
         "cannot write video")
    _bad([*base, "--out", str(tmp_path / "o"), "--video", str(tmp_path / "v.gif")], capsys,
         ".mp4")


def test_overwrite_replaces_an_output_bag(ckpt, good_bag, tmp_path, capsys):
    args = [str(good_bag), "--image-topic", "/camera/image", "--query", QUERY, "--out",
            str(tmp_path / "out"), "--max-frames", "1", "--model", str(ckpt), *SMALL]
    assert run_bag(args, capsys)[0] == 0
    assert run_bag(args, capsys)[0] == EXIT_INPUT
    code, _, err = run_bag([*args, "--overwrite", "--max-frames", "2"], capsys)
    assert code == 0, err
    assert len(read_bag(tmp_path / "out")["/stamp/result"]) == 2


# --------------------------------------------------------------------------- Ctrl-C


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """stderr lines up to and including the first containing ``needle`` (progress is the
    observable sign that frames are being written; never a sleep)."""
    seen: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=deadline - time.monotonic()):
            continue
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} from the bag command; stderr so far: {seen}")


def test_ctrl_c_leaves_a_valid_bag_with_what_was_done(ckpt, photo, tmp_path):
    n = 600
    src = camera_bag(tmp_path / "in", frames_of(photo, 30) * (n // 30))
    out, video = tmp_path / "out", tmp_path / "v.mp4"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stamp_ros.cli", "bag", str(src), "--image-topic",
         "/camera/image", "--query", QUERY, "--out", str(out), "--video", str(video),
         "--copy-input", "--json", "--model", str(ckpt), *SMALL],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_line(proc, "progress: 1/", timeout=300)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "holds the" in stderr
    data = json.loads(stdout)
    assert data["interrupted"] and 1 <= data["results"] < n
    bag = read_bag(out)  # metadata.yaml and the MCAP summary were written
    assert (out / "metadata.yaml").exists()
    done = data["results"]
    assert len(bag["/stamp/result"]) == len(bag["/stamp/mask"]) == done
    assert len(bag["/camera/image"]) >= done
    assert all(m.success for _, m in bag["/stamp/result"])
    cap = cv2.VideoCapture(str(video))
    try:
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == done
    finally:
        cap.release()


# --------------------------------------------------------------------------- interfaces


def test_message_definitions_are_package_data(tmp_path):
    """`pip install .` ships msg/*.msg inside stamp_ros/bag/interfaces, where the typestore
    finds them first (no checkout, no ROS install needed)."""
    build = tmp_path / "lib"
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib",
                           str(build)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shipped = build / "stamp_ros" / "bag" / "interfaces"
    for name in ("Segmentation.msg", "Instance.msg"):
        assert (shipped / name).read_text() == (REPO / "msg" / name).read_text()
    env = dict(os.environ, PYTHONPATH=str(build))
    env.pop("STAMP_ROS_MSG_DIR", None)
    found = subprocess.run(
        [sys.executable, "-c", "from stamp_ros.bag.interfaces import msg_dir; print(msg_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == shipped


def test_type_hash_matches_rosidl_when_installed():
    """rosbags hashes our definitions as rosidl does, so tools that check RIHS01 accept them."""
    installed = Path(sys.prefix) / "share" / "stamp_ros" / "msg"
    store = typestore()
    checked = 0
    for name in ("Segmentation", "Instance"):
        json_file = installed / f"{name}.json"
        if not json_file.exists() or (installed / f"{name}.msg").read_text() != (
                msg_dir() / f"{name}.msg").read_text():
            continue  # no ROS build here, or one built from other definitions
        described = json.loads(json_file.read_text())
        hashes = [h["hash_string"] for h in described["type_hashes"]
                  if h["type_name"] == f"stamp_ros/msg/{name}"]
        assert store.hash_rihs01(f"stamp_ros/msg/{name}") == hashes[0]
        checked += 1
    if not checked:
        pytest.skip("no rosidl build of the current stamp_ros messages in this environment")


def test_the_node_and_bag_kits_fill_the_same_fields():
    """results.segmentation_msg builds rosbags messages with the node's code: every field
    equals the rclpy message's (when rclpy is here), and the message survives CDR."""
    from stamp_ros.engine.result import SegInstance, StampResult
    from stamp_ros.pipeline.results import error_msg, segmentation_msg
    from stamp_ros.spatial.geometry import Object3D

    grid = np.array([[0, 1, 1], [0, 1, 0]], np.uint8)
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 1
    inst = SegInstance(grid=grid, logits=np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
                       mask=mask, bbox=(2, 1, 4, 2), area=6, score=0.75)
    result = StampResult(text="it is here", instances=[inst], image_size=(6, 4),
                         grid_size=(2, 3), timings_ms={"preprocess": 1.0, "generate": 2.0,
                                                      "mask": 3.0, "postprocess": 4.0})
    obj = Object3D(centroid=np.array([0.1, 0.2, 2.0]), box_min=np.array([0.0, 0.1, 1.95]),
                   box_max=np.array([0.3, 0.3, 2.05]), size=np.array([0.3, 0.2, 0.1]),
                   n_points=42)
    kit = RosbagsKit()
    header = _header(T0 + 5)
    bag_msg = segmentation_msg(request_id="c1", query="q", header=header, result=result,
                               model="m", wait_ms=0.5, convert_ms=0.25, objects=[obj],
                               frame_id_3d="cam", kit=kit)
    store = typestore()
    back = store.deserialize_cdr(store.serialize_cdr(bag_msg, "stamp_ros/msg/Segmentation"),
                                 "stamp_ros/msg/Segmentation")
    got = back.instances[0]
    assert back.answer == "it is here" and back.preprocess_ms == pytest.approx(1.25)
    np.testing.assert_array_equal(np.asarray(got.grid), grid.ravel())
    np.testing.assert_allclose(np.asarray(got.grid_logits), inst.logits.ravel())
    np.testing.assert_array_equal(pixels(got.mask), mask * 255)
    assert got.has_3d and got.centroid.z == pytest.approx(2.0) and got.num_points == 42
    err = error_msg(request_id="q1", query="", error="empty query", kit=kit)
    assert store.deserialize_cdr(store.serialize_cdr(err, "stamp_ros/msg/Segmentation"),
                                 "stamp_ros/msg/Segmentation").error == "empty query"

    try:
        from stamp_ros.msg import Segmentation  # noqa: F401
        from std_msgs.msg import Header

        from stamp_ros.ros.kit import rclpy_kit
    except ImportError:
        return
    ros_header = Header(frame_id=header.frame_id)
    ros_header.stamp.sec, ros_header.stamp.nanosec = header.stamp.sec, header.stamp.nanosec
    ros_msg = segmentation_msg(request_id="c1", query="q", header=ros_header, result=result,
                               model="m", wait_ms=0.5, convert_ms=0.25, objects=[obj],
                               frame_id_3d="cam", kit=rclpy_kit())

    ours, node = flat_fields(bag_msg), flat_fields(ros_msg)
    # Both sides come from msg/*.msg; a ROS build older than the checkout may lack new fields.
    common = ours.keys() & node.keys()
    assert len(common) > 40 and "instances[0].centroid.z" in common
    for key in sorted(common):
        value = node[key]
        if isinstance(value, float) or (isinstance(value, list) and value and
                                        isinstance(value[0], float)):
            assert ours[key] == pytest.approx(value), key
        else:
            assert ours[key] == value, key
