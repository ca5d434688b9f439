"""`stamp-ros demo`: the node, a camera stream from image files, one query, answer + overlay.

This is the README's first command (docs/setup.md): it runs the real node in its own process and
talks to it over ROS 2 exactly as a robot's planner would: a camera stream on the image topic,
the request through :class:`stamp_ros.client.StampClient` (the ~/segment action), the overlay
from ~/overlay. When the model is neither a local directory nor reachable on the hub, it says so
in one line and falls back to a generated tiny checkpoint with random weights, labelled as such
in every output, so the plumbing can still be seen working on an offline machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from stamp_ros.engine.defaults import DEFAULT_MODEL

DEFAULT_QUERY = "Please segment the woman in the image."
RANDOM_LABEL = "RANDOM WEIGHTS (tiny test checkpoint): the answer and mask are meaningless"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def default_photo() -> Path:
    """A real photo that ships inside an installed package (matplotlib's sample data)."""
    import matplotlib

    path = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"matplotlib sample photo missing at {path}; pass --image")
    return path


def load_images(source: Path | None) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    paths = [default_photo()] if source is None else (
        sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if source.is_dir() else [source])
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def resolve_model(model: str, work_dir: Path) -> tuple[str, bool, str]:
    """(model to load, random_weights, why) — falls back to a tiny random checkpoint."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser()), False, f"local checkpoint {model}"
    reason = _hub_unreachable(model)
    if reason is None:
        return model, False, f"hub model {model}"
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    ckpt = make_test_checkpoint(work_dir / "tiny-random-checkpoint", seed=0)
    return str(ckpt), True, (
        f"model {model} is not reachable ({reason}) and is not a local directory: falling "
        f"back to a generated tiny test checkpoint with RANDOM weights at {ckpt}")


def _hub_unreachable(model: str) -> str | None:
    """None when the model's config can be had from the hub or its cache, else why not.

    The cache is asked first and the hub's host is probed with one short TCP connect, so an
    offline machine gets its answer in seconds instead of sitting through HTTP retries.
    """
    import logging
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, hf_hub_download

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        hf_hub_download(model, "config.json", local_files_only=True)
        return None
    except Exception:
        pass
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and the model is not cached"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as exc:
        return f"cannot connect to {url.hostname}: {exc}"
    try:
        hf_hub_download(model, "config.json", etag_timeout=10)
        return None
    except Exception as exc:  # unknown repo, gated, network: all mean "cannot use it here"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"


def run(args: Any) -> int:
    try:
        return _run(args)
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"[demo] error: {exc}", file=sys.stderr, flush=True)
        return 1


def _run(args: Any) -> int:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = load_images(Path(args.image) if args.image else None)
    model, random_weights, why = resolve_model(args.model or DEFAULT_MODEL, out_dir)
    print(f"[demo] {why}", flush=True)
    query = args.query or DEFAULT_QUERY

    import rclpy  # imported late: the offline fallback above must not need ROS

    from stamp_ros.cli.dds_profile import PROFILE_VARIABLES, large_image_env

    env = dict(os.environ)
    with _domain(env) as domain_id:
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        env.setdefault("ROS_LOCALHOST_ONLY", "1")
        for name, value in large_image_env().items():  # full-rate frames between processes
            env.setdefault(name, value)
        os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                               "ROS_LOCALHOST_ONLY", *PROFILE_VARIABLES)
                           if k in env})
        cmd = [sys.executable, "-m", "stamp_ros.cli.run_node", "--ros-args",
               "-p", f"model:={model}", "-p", f"device:={args.device}",
               "-p", "stats_period:=0.0", "-r", "image:=/demo/image"]
        log_path = out_dir / "node.log"
        with log_path.open("w") as log:
            node = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            return _drive(rclpy, domain_id, node, images, query, out_dir, random_weights,
                          model, args.timeout, log_path)
        finally:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGINT)
                try:
                    node.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(node.pid, signal.SIGKILL)


class _domain:
    """ROS_DOMAIN_ID from the environment, else one no other local process holds."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._ctx = None

    def __enter__(self) -> int:
        if "ROS_DOMAIN_ID" not in self.env:
            from domain_coordinator import domain_id

            self._ctx = domain_id()
            self.env["ROS_DOMAIN_ID"] = str(self._ctx.__enter__())
        return int(self.env["ROS_DOMAIN_ID"])

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def _drive(rclpy: Any, domain_id: int, node: subprocess.Popen, images: list, query: str,
           out_dir: Path, random_weights: bool, model: str, timeout: float,
           log_path: Path) -> int:
    from PIL import Image as PILImage
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from stamp_ros.client import StampClient
    from stamp_ros.msgs.convert import image_msg_to_rgb
    from stamp_ros.ros.kit import rgb_to_image_msg

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    planner = rclpy.create_node("stamp_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(planner)
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    got: dict[str, Any] = {}
    planner.create_subscription(Image, "/stamp_node/overlay",
                                lambda m: got.setdefault("overlay", m), reliable)
    image_pub = planner.create_publisher(Image, "/demo/image", reliable)
    client = StampClient(planner)
    stop = threading.Event()
    spinner = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
    spinner.start()
    frames = [rgb_to_image_msg(rgb) for _, rgb in images]
    for msg in frames:
        msg.header.frame_id = "demo_camera"
    camera = threading.Thread(target=_stream, args=(planner, image_pub, frames, stop),
                              daemon=True)
    try:
        deadline = time.monotonic() + timeout
        print("[demo] waiting for the node to load the model ...", flush=True)
        _wait_ready(client, node, deadline, log_path)
        # Frames published before the node's subscription matched would be lost, and the
        # overlay is rendered only while a subscriber is matched.
        while image_pub.get_subscription_count() < 1 or \
                planner.count_publishers("/stamp_node/overlay") < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the node's topics did not appear (see {log_path})")
            time.sleep(0.05)
        camera.start()
        print(f"[demo] query: {query!r} on {images[0][0]}", flush=True)
        task = client.segment_async(query)
        while not task.wait(0.5):
            if node.poll() is not None:
                raise RuntimeError(f"the node exited (see {log_path})")
            if time.monotonic() > deadline:
                task.cancel()
                raise TimeoutError(f"no result within {timeout:g} s (see {log_path})")
        res = task.result(timeout=0)
        overlay_deadline = time.monotonic() + 5.0  # published right after the result
        while res.success and "overlay" not in got:
            if time.monotonic() > overlay_deadline:
                break
            time.sleep(0.05)
        return _report(res, got.get("overlay"), out_dir, random_weights, model, query,
                       image_msg_to_rgb, PILImage)
    finally:
        stop.set()
        spinner.join(2)
        if camera.is_alive():
            camera.join(2)
        client.destroy()
        planner.destroy_node()
        rclpy.try_shutdown(context=context)


def _spin(executor: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:
            return


def _stream(planner: Any, pub: Any, frames: list, stop: threading.Event) -> None:
    """The demo's camera: the frames in turn at 5 Hz, stamped when sent."""
    i = 0
    while not stop.is_set():
        msg = frames[i % len(frames)]
        msg.header.stamp = planner.get_clock().now().to_msg()
        pub.publish(msg)
        i += 1
        stop.wait(0.2)


def _load_failed(log_path: Path) -> bool:
    try:
        return "could not be loaded" in log_path.read_text(errors="replace")
    except OSError:
        return False


def _wait_ready(client: Any, node: subprocess.Popen, deadline: float, log_path: Path) -> None:
    from stamp_ros.client import StampUnavailable

    while True:
        try:
            client.wait_until_ready(timeout=max(0.0, min(2.0, deadline - time.monotonic())))
            return
        except StampUnavailable as exc:
            if node.poll() is not None:
                raise RuntimeError(f"the node exited (see {log_path})") from None
            # Inactive while the model loads (activate waits for it) and after a failed load:
            # only the node's log tells the two apart.
            if exc.state == "inactive" and _load_failed(log_path):
                raise RuntimeError(
                    f"the node could not load the model (see {log_path})") from None
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the node did not become active in time (see {log_path})") from None


def _report(res: Any, overlay_msg: Any, out_dir: Path, random_weights: bool, model: str,
            query: str, to_rgb: Any, pil: Any) -> int:
    label = f" [{RANDOM_LABEL}]" if random_weights else ""
    summary = {
        "model": model,
        "random_weights": random_weights,
        "query": query,
        "answer": res.answer,
        "success": res.success,
        "error": res.error,
        "frame": {"frame_id": res.frame_id,
                  "stamp": [res.header.stamp.sec, res.header.stamp.nanosec]},
        "instances": [{"bbox": list(o.box) if o.box else [0, 0, -1, -1], "area": o.area,
                       "score": round(o.score, 4)} for o in res.objects],
        "timings_ms": {k: round(res.timings[f"{k}_ms"], 1) for k in
                       ("wait", "preprocess", "generate", "mask", "postprocess", "total")},
    }
    if not res.success:
        print(f"[demo] error result: {res.error}{label}", flush=True)
        (out_dir / "result.json").write_text(json.dumps(summary, indent=2))
        return 1
    print(f"[demo] answer: {res.answer!r}{label}", flush=True)
    print(f"[demo] {len(res.objects)} mask(s); total {res.timings['total_ms']:.0f} ms",
          flush=True)
    if overlay_msg is not None:
        overlay = np.array(to_rgb(overlay_msg))
        if random_weights:
            _stamp_label(overlay, RANDOM_LABEL)
        path = out_dir / ("overlay-random-weights.png" if random_weights else "overlay.png")
        pil.fromarray(overlay).save(path)
        summary["overlay_png"] = str(path)
        print(f"[demo] overlay written to {path}{label}", flush=True)
    (out_dir / "result.json").write_text(json.dumps(summary, indent=2))
    print(f"[demo] result written to {out_dir / 'result.json'}", flush=True)
    return 0


def _stamp_label(rgb: np.ndarray, text: str) -> None:
    import cv2

    h, w = rgb.shape[:2]
    scale = max(0.35, w / 1600)
    cv2.rectangle(rgb, (0, h - int(28 * scale / 0.5)), (w, h), (200, 0, 0), -1)
    cv2.putText(rgb, text, (6, h - int(8 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run the node on a photo (or a folder of frames) with one query",
        description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None,
                   help=f"hub id or local checkpoint directory (default {DEFAULT_MODEL})")
    p.add_argument("--image", default=None,
                   help="image file or folder of frames (default: a photo from matplotlib's "
                        "sample data)")
    p.add_argument("--query", default=None, help=f"default: {DEFAULT_QUERY!r}")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--out-dir", default="out/demo", help="where overlay and result go")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds to wait for model loading plus the answer")
    p.set_defaults(handler=run)
