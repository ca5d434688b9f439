#!/usr/bin/env python3
"""Query-anchored tracking (issue 19): prints ONE JSON object (logs on stderr).

Three parts, each selectable with ``--parts``:

* ``propagation``: the tracker's cost per camera frame, in-process: grey + integer downscale,
  then ``QueryTracker.step`` (LK forward-backward, one RANSAC similarity per object, the model's
  mask placed at full resolution), at 640x480 and 1920x1080 with 1 and 3 objects on a
  synthetic scene panning 1.5 px per frame at 640x480 (4.5 at 1080p, so the objects stay in
  view); and what grounding one model answer costs.
* ``drift``: why sparse and not frame-to-frame dense flow. A 640x480 window panned 3 px per frame
  over ../shared/data/horses.jpg (a synthetic texture without it), a blocky 28-px-cell mask
  (STAMP's grid), IoU with the truly shifted mask after 10/30/60/90 frames for the tracker and for
  dense DIS flow (ultrafast/fast/medium at half size, flows composed into one map, the key mask
  warped once), with ms per frame.
* ``node``: the real node (own process, continuous mode, ``track:=true``) fed a 30 Hz 640x480
  stream over DDS (shipped large-image profile, localhost) of a camera swaying left and right
  (60 px amplitude, 4 s period: up to 3 px per frame, so the tracked objects stay in view
  however slow the model) while the model answers non-stop: ``~/tracks`` rate, the share of
  published frames that got tracks, the node's added latency per tracked frame (``total_ms``:
  frame received -> ~/tracks published; and per stage) and the end-to-end latency (header
  stamp = publish time -> received here, one host clock), for the tiny test model and the
  CPU-sized ``mid`` model (``--node-env OMP_NUM_THREADS=1``: the model on one core). The goal
  (issue 19): >= 29 Hz of ~/tracks with p90 added latency <= 15 ms at 640x480 on the 2-core
  machine.

    PYTHONPATH=. .venv/bin/python bench/tracking.py --out bench/results/cpu-tracking.json
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stamp_ros.bench.machine import cpu_model  # noqa: E402
from stamp_ros.testing.scenes import CELL, PanScene, model_like_mask  # noqa: E402
from stamp_ros.tracking import (  # noqa: E402
    QueryTracker,
    TrackerConfig,
    TrackIds,
    iou_matrix,
    working_frame,
)

HORSES = ROOT.parent / "shared" / "data" / "horses.jpg"
GOAL_HZ = 29.0
GOAL_P90_MS = 15.0


def log(text: str) -> None:
    print(f"[tracking] {text}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(iou_matrix([a], [b])[0, 0]), 3)


# ------------------------------------------------------------------ propagation cost
def object_masks(scene: PanScene, count: int) -> list[np.ndarray]:
    """``count`` non-overlapping blocky masks spread over the first frame."""
    h, w = scene.h, scene.w
    masks = []
    for k in range(count):  # from the middle rightwards: the pan moves them left
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (int(w * (0.45 + 0.2 * k)), h // 2), (w // 14, h // 5), 0, 0, 360, 1, -1)
        masks.append(model_like_mask(m, cell=max(CELL, w // 23)))
    return masks


def bench_propagation(frames: int) -> dict:
    out = {}
    for size in ((640, 480), (1920, 1080)):
        scene = PanScene(size=size, velocity=(1.5 * size[0] / 640, 0.0), frames=frames + 1,
                         seed=1)
        images = [scene.frame(i) for i in range(frames + 1)]
        for count in (1, 3):
            config = TrackerConfig()
            tracker = QueryTracker(TrackIds(), config)
            first = working_frame(images[0], config.max_side)
            tracker.step(0, first)
            t0 = time.perf_counter()
            tracker.ground(0, first, object_masks(scene, count))
            ground_ms = (time.perf_counter() - t0) * 1e3
            convert, step, total = [], [], []
            live = 0
            for i in range(1, frames + 1):
                t0 = time.perf_counter()
                wf = working_frame(images[i], config.max_side)
                t1 = time.perf_counter()
                result = tracker.step(i, wf)
                t2 = time.perf_counter()
                convert.append((t1 - t0) * 1e3)
                step.append((t2 - t1) * 1e3)
                total.append((t2 - t0) * 1e3)
                live = len(result.objects)
            key = f"{size[0]}x{size[1]}_{count}obj"
            out[key] = {
                "working_size": list(wf.size), "objects_live_at_end": live,
                "convert_ms_p50": pct(convert, 50), "step_ms_p50": pct(step, 50),
                "total_ms_p50": pct(total, 50), "total_ms_p90": pct(total, 90),
                "ground_ms": round(ground_ms, 2)}
            log(f"propagation {key}: {out[key]}")
    return out


# ------------------------------------------------------------------ drift
def horses_pan(frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """640x480 windows of the photo moving 3 px/frame right, and the key mask moved along."""
    if HORSES.is_file():
        photo = cv2.cvtColor(cv2.imread(str(HORSES)), cv2.COLOR_BGR2RGB)
    else:
        from stamp_ros.testing.scenes import texture

        photo = texture(1367, 2048, seed=3)
    x0, y0 = 200, 300
    images = [np.ascontiguousarray(photo[y0:y0 + 480, x0 + 3 * i: x0 + 3 * i + 640])
              for i in range(frames + 1)]
    true = np.zeros((480, 640), np.uint8)
    cv2.ellipse(true, (330, 250), (140, 110), 0, 0, 360, 1, -1)
    key = model_like_mask(true)
    masks = []
    for i in range(frames + 1):
        m = np.zeros_like(key)
        m[:, : 640 - 3 * i] = key[:, 3 * i:]
        masks.append(m)
    return images, masks


def dense_composed(images, key_mask, preset: int, checkpoints) -> tuple[dict, float]:
    """DIS at half size, backward flows composed into one current -> key map, key mask warped
    once per frame (nearest): the best dense variant of tracking-notes.md."""
    dis = cv2.DISOpticalFlow_create(preset)
    h, w = key_mask.shape
    half = (w // 2, h // 2)
    grey = [cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), half, interpolation=cv2.INTER_AREA)
            for im in images]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = gx.copy(), gy.copy()
    ious, times = {}, []
    for i in range(1, len(images)):
        t0 = time.perf_counter()
        flow = dis.calc(grey[i], grey[i - 1], None)  # current -> previous
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * 2.0
        px, py = gx + flow[..., 0], gy + flow[..., 1]
        map_x = cv2.remap(map_x, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        map_y = cv2.remap(map_y, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.remap(key_mask, map_x, map_y, cv2.INTER_NEAREST)
        times.append((time.perf_counter() - t0) * 1e3)
        if i in checkpoints:
            ious[i] = mask
    return ious, statistics.median(times)


def bench_drift(frames: int = 90) -> dict:
    images, truth = horses_pan(frames)
    checkpoints = (10, 30, 60, 90)
    rows = {}
    config = TrackerConfig()
    tracker = QueryTracker(TrackIds(), config)
    first = working_frame(images[0], config.max_side)
    tracker.step(0, first)
    tracker.ground(0, first, [truth[0]])
    times, got = [], {}
    for i in range(1, frames + 1):
        t0 = time.perf_counter()
        out = tracker.step(i, working_frame(images[i], config.max_side))
        times.append((time.perf_counter() - t0) * 1e3)
        if i in checkpoints:
            got[i] = out.objects[0].mask if out.objects else np.zeros_like(truth[0], bool)
    rows["sparse_similarity (stamp_ros.tracking)"] = {
        "ms_per_frame_p50": round(statistics.median(times), 2),
        **{f"iou_{i}": iou(got[i], truth[i]) for i in checkpoints}}
    for name, preset in (("ultrafast", cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
                         ("fast", cv2.DISOPTICAL_FLOW_PRESET_FAST),
                         ("medium", cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)):
        masks, ms = dense_composed(images, truth[0], preset, checkpoints)
        rows[f"dense_DIS_{name}_composed"] = {
            "ms_per_frame_p50": round(ms, 2),
            **{f"iou_{i}": iou(masks[i], truth[i]) for i in checkpoints}}
    for name, row in rows.items():
        log(f"drift {name}: {row}")
    return {"scene": "horses.jpg" if HORSES.is_file() else "synthetic texture",
            "pan_px_per_frame": 3, "mask": "28-px cells (STAMP grid)", "methods": rows}


# ------------------------------------------------------------------ the node
SWAY_PX, SWAY_FRAMES = 60.0, 120


def bench_node(model: str, seconds: float, size: tuple[int, int], tmp: Path,
               node_env: dict[str, str] | None = None, segs: int = 1,
               subscribe_outputs: bool = False, depth: bool = False) -> dict:
    """The real node tracking a swaying camera (see the module docstring). ``segs`` objects
    per answer; ``subscribe_outputs``: ``publish_tf:=true`` and this process subscribed to
    ``~/tracks/detections``, ``~/tracks/detections_3d``, ``~/tracks/labels`` and ``/tf``
    (issue 30: every output built on every tracked frame); ``depth``: also a depth stream
    (16UC1, 1 m everywhere) with camera_info, so every tracked object is lifted to 3D (and
    has a Detection3D and a TF frame)."""
    import rclpy
    from domain_coordinator import domain_id
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from stamp_ros.msg import Segmentation
    from std_msgs.msg import String

    from stamp_ros.bench.inputs import load_shape
    from stamp_ros.cli.dds_profile import large_image_env
    from stamp_ros.ros.kit import rgb_to_image_msg
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    answer = "Sure, it is here: <|seg|>" if segs == 1 else (
        "Here they are: " + ", ".join(["<|seg|>"] * segs))
    ckpt = make_test_checkpoint(tmp / f"ckpt-{model}-{segs}", answer=answer,
                                shape=load_shape(model))
    pixels = ["-p", "min_pixels:=12544", "-p", "max_pixels:=12544"] if model == "tiny" else []
    with domain_id() as did:
        env = dict(os.environ, ROS_DOMAIN_ID=str(did), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_LOCALHOST_ONLY="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")])))
        env.update(large_image_env())
        env.update(node_env or {})
        os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                               "ROS_LOCALHOST_ONLY")})
        os.environ.update(large_image_env())
        node_log = tmp / f"node-{model}.log"
        args = [sys.executable, "-m", "stamp_ros.cli.run_node", "--ros-args",
                "-p", f"model:={ckpt}", "-p", "device:=cpu", "-p", "mode:=continuous",
                "-p", "track:=true", "-p", "stats_period:=0.0", *pixels,
                *(["-p", "publish_tf:=true"] if subscribe_outputs else [])]
        with node_log.open("w") as fh:
            proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=ROOT, start_new_session=True)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=did)
        node = rclpy.create_node("tracking_bench", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spin = threading.Thread(target=lambda: _spin(executor, context), daemon=True)
        spin.start()
        try:
            deadline = time.monotonic() + 300
            while "warm-up done" not in node_log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("node did not start:\n" + node_log.read_text()[-2000:])
                time.sleep(0.2)
            reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            tracks, results = [], []
            node.create_subscription(
                Segmentation, "/stamp_node/tracks",
                lambda m: tracks.append((time.time(), _sec(m.header.stamp), m.total_ms,
                                         m.propagated, m.wait_ms, m.preprocess_ms, m.mask_ms,
                                         m.postprocess_ms, len(m.instances))), reliable)
            node.create_subscription(Segmentation, "/stamp_node/result",
                                     lambda m: results.append((time.time(), m.success)),
                                     reliable)
            img_pub = node.create_publisher(Image, "/image", QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE))
            outputs: dict[str, list[float]] = {}
            depth_pub = info_pub = None
            if subscribe_outputs:
                from tf2_msgs.msg import TFMessage
                from vision_msgs.msg import Detection2DArray, Detection3DArray

                def counter(topic: str):
                    return lambda m: outputs[topic].append(time.time())

                for topic, kind in (("/stamp_node/tracks/detections", Detection2DArray),
                                    ("/stamp_node/tracks/detections_3d", Detection3DArray),
                                    ("/stamp_node/tracks/labels", Image), ("/tf", TFMessage)):
                    outputs[topic] = []
                    node.create_subscription(kind, topic, counter(topic), reliable)
            if depth:
                depth_pub = node.create_publisher(Image, "/depth", QoSProfile(
                    depth=1, reliability=ReliabilityPolicy.RELIABLE))
                info_pub = node.create_publisher(CameraInfo, "/camera_info", reliable)
            query_pub = node.create_publisher(String, "/query", reliable)
            while img_pub.get_subscription_count() < 1 or query_pub.get_subscription_count() < 1:
                time.sleep(0.05)
            query_pub.publish(String(data="Please segment the textured region."))
            scene = PanScene(size=size, velocity=(1.0, 0.0), frames=int(SWAY_PX) + 2, seed=2)
            msgs = [rgb_to_image_msg(scene.view(
                SWAY_PX * (1.0 + np.sin(2 * np.pi * i / SWAY_FRAMES))))
                for i in range(SWAY_FRAMES)]
            depth_msg = info = None
            if depth:
                from stamp_ros.ros.kit import build_image_msg

                w, h = size
                depth_msg = build_image_msg(None, h, w, "16UC1", 2 * w, False,
                                            np.full((h, w), 1000, np.uint16).tobytes())
                info = CameraInfo(width=w, height=h, k=[500.0, 0.0, w / 2, 0.0, 500.0, h / 2,
                                                         0.0, 0.0, 1.0])
                info.header.frame_id = depth_msg.header.frame_id = "cam"
            published: list[float] = []
            stop = threading.Event()

            def camera() -> None:
                period, nxt = 1.0 / 30, time.monotonic()
                i = 0
                while not stop.is_set():
                    msg = msgs[i % len(msgs)]
                    now = time.time()
                    msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int(now % 1 * 1e9)
                    msg.header.frame_id = "cam"
                    img_pub.publish(msg)
                    if depth_msg is not None:
                        depth_msg.header.stamp = info.header.stamp = msg.header.stamp
                        info_pub.publish(info)
                        depth_pub.publish(depth_msg)
                    published.append(now)
                    i += 1
                    nxt += period
                    time.sleep(max(0.0, nxt - time.monotonic()))

            cam = threading.Thread(target=camera, daemon=True)
            cam.start()
            deadline = time.monotonic() + 300
            while not tracks:  # the first answer grounds tracking
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("no ~/tracks:\n" + node_log.read_text()[-2000:])
                time.sleep(0.1)
            time.sleep(2.0)  # settle after the first answer
            t_start = time.time()
            time.sleep(seconds)
            t_end = time.time()
            stop.set()
            cam.join()
            time.sleep(1.0)  # in-flight messages
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            node.destroy_node()
            rclpy.try_shutdown(context=context)
    window = [t for t in tracks if t_start <= t[1] < t_end]  # by frame stamp
    frames_in = [p for p in published if t_start <= p < t_end]
    answers = [r for r in results if t_start <= r[0] < t_end and r[1]]
    added = [t[2] for t in window]
    e2e = [(t[0] - t[1]) * 1e3 for t in window]
    span = t_end - t_start
    row = {
        "model": model, "size": f"{size[0]}x{size[1]}", "seconds": round(span, 1),
        "published_hz": round(len(frames_in) / span, 2),
        "tracks_hz": round(len(window) / span, 2),
        "tracked_fraction": round(len(window) / max(1, len(frames_in)), 3),
        "added_latency_ms_p50": pct(added, 50), "added_latency_ms_p90": pct(added, 90),
        "e2e_latency_ms_p50": pct(e2e, 50), "e2e_latency_ms_p90": pct(e2e, 90),
        "model_answers_per_s": round(len(answers) / span, 2),
        "propagated_fraction": round(sum(1 for t in window if t[3]) / max(1, len(window)), 3),
        "objects_per_frame_mean": round(float(np.mean([t[8] for t in window])), 2)
        if window else 0.0,
        "node_env": node_env or {},
        "segs_per_answer": segs,
        "outputs_subscribed": subscribe_outputs,
        "depth": depth,
        "outputs_hz": {topic: round(len([t for t in times if t_start <= t < t_end + 0.5])
                                    / span, 2) for topic, times in outputs.items()},
        "stages_ms_p50_p90": {
            stage: [pct([t[k] for t in window], 50), pct([t[k] for t in window], 90)]
            for k, stage in ((4, "wait"), (5, "convert"), (6, "step"), (7, "message"))},
    }
    row["goal_met"] = bool(row["tracks_hz"] >= GOAL_HZ and row["added_latency_ms_p90"] is not None
                           and row["added_latency_ms_p90"] <= GOAL_P90_MS)
    log(f"node {model}: {row}")
    return row


def _sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _spin(executor, context) -> None:
    try:
        while context.ok():
            executor.spin_once(timeout_sec=0.05)
    except Exception:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="propagation,drift,node")
    parser.add_argument("--frames", type=int, default=150, help="frames per propagation case")
    parser.add_argument("--models", default="tiny,mid", help="node part: model shapes")
    parser.add_argument("--seconds", type=float, default=20.0, help="node part: window")
    parser.add_argument("--repeats", type=int, default=1, help="node part: runs per model")
    parser.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE",
                        help="node part: extra environment of the node process, e.g. "
                        "OMP_NUM_THREADS=1 (repeatable)")
    parser.add_argument("--segs", type=int, default=1, help="node part: objects per answer")
    parser.add_argument("--subscribe-outputs", action="store_true",
                        help="node part: depth + camera_info in, publish_tf:=true, and every "
                        "~/tracks/ standard output and /tf subscribed (issue 30)")
    parser.add_argument("--depth", action="store_true",
                        help="node part: a depth stream + camera_info too (3D on every "
                        "tracked frame)")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    load_before = os.getloadavg()
    report: dict = {
        "benchmark": "query-anchored tracking (issue 19)",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores (shared)",
        "platform": platform.platform(), "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
        "note": args.note,
        "tracker_defaults": TrackerConfig().__dict__,
    }
    if "propagation" in parts:
        report["propagation"] = bench_propagation(args.frames)
    if "drift" in parts:
        report["drift"] = bench_drift()
    if "node" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(item.split("=", 1) for item in args.node_env)
            report["node"] = [bench_node(m, args.seconds, (640, 480), Path(tmp), env,
                                         args.segs, args.subscribe_outputs, args.depth)
                              for m in args.models.split(",") if m
                              for _ in range(max(1, args.repeats))]
        report["goal"] = {"tracks_hz_min": GOAL_HZ, "added_latency_p90_ms_max": GOAL_P90_MS,
                          "at": "640x480, 30 Hz input, model answering non-stop"}
    report["load_avg_1_5_15_after"] = [round(v, 2) for v in os.getloadavg()]
    from stamp_ros.bench.command import write_report

    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
