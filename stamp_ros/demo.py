"""`stamp-ros demo`: the node, a camera stream from image files, one query, answer + overlay.

This is the README's main job: it runs the real node in its own process and talks to it over
ROS 2 exactly as a robot's planner would (image topic, query topic, ~/result, ~/overlay).
When the model is neither a local directory nor reachable on the hub, it says so in one line
and falls back to a generated tiny checkpoint with random weights, labelled as such in every
output, so the plumbing can still be seen working on an offline machine.
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

    from stamp_ros.dds_profile import PROFILE_VARIABLES, large_image_env

    env = dict(os.environ)
    with _domain(env) as domain_id:
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        env.setdefault("ROS_LOCALHOST_ONLY", "1")
        for name, value in large_image_env().items():  # full-rate frames between processes
            env.setdefault(name, value)
        os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                               "ROS_LOCALHOST_ONLY", *PROFILE_VARIABLES)})
        cmd = [sys.executable, "-m", "stamp_ros.run_node", "--ros-args",
               "-p", f"model:={model}", "-p", f"device:={args.device}",
               "-p", "stats_period:=0.0", "-r", "image:=/demo/image", "-r", "query:=/demo/query"]
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
    from lifecycle_msgs.srv import GetState
    from PIL import Image as PILImage
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from stamp_ros.msg import Segmentation
    from stamp_ros.ros.convert import image_msg_to_rgb, rgb_to_image_msg

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    client = rclpy.create_node("stamp_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    got: dict[str, Any] = {}
    client.create_subscription(Segmentation, "/stamp_node/result",
                               lambda m: got.setdefault("result", m), reliable)
    client.create_subscription(Image, "/stamp_node/overlay",
                               lambda m: got.setdefault("overlay", m), reliable)
    image_pub = client.create_publisher(Image, "/demo/image", reliable)
    query_pub = client.create_publisher(String, "/demo/query", reliable)
    state_cli = client.create_client(GetState, "/stamp_node/get_state")
    stop = threading.Event()
    spinner = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + timeout
        print("[demo] waiting for the node to load the model ...", flush=True)
        _wait_active(state_cli, node, deadline, log_path)
        frames = [rgb_to_image_msg(rgb) for _, rgb in images]
        for msg in frames:
            msg.header.frame_id = "demo_camera"
        sent_query = False
        i = 0
        while "result" not in got:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result within {timeout:g} s (see {log_path})")
            if node.poll() is not None:
                raise RuntimeError(f"the node exited (see {log_path})")
            msg = frames[i % len(frames)]
            msg.header.stamp = client.get_clock().now().to_msg()
            image_pub.publish(msg)
            i += 1
            if not sent_query and i >= 2:
                query_pub.publish(String(data=query))
                sent_query = True
                print(f"[demo] query: {query!r} on {images[0][0]}", flush=True)
            time.sleep(0.2)
        overlay_deadline = time.monotonic() + 5.0  # published right after the result
        while got["result"].success and "overlay" not in got:
            if time.monotonic() > overlay_deadline:
                break
            time.sleep(0.05)
        return _report(got, out_dir, random_weights, model, query, image_msg_to_rgb, PILImage)
    finally:
        stop.set()
        spinner.join(2)
        client.destroy_node()
        rclpy.try_shutdown(context=context)


def _spin(executor: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:
            return


def _wait_active(state_cli: Any, node: subprocess.Popen, deadline: float,
                 log_path: Path) -> None:
    from lifecycle_msgs.srv import GetState

    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"the node exited (see {log_path})")
        if state_cli.wait_for_service(timeout_sec=0.5):
            fut = state_cli.call_async(GetState.Request())
            t = time.monotonic()
            while not fut.done() and time.monotonic() - t < 5:
                time.sleep(0.05)
            if fut.done() and fut.result().current_state.label == "active":
                return
            if fut.done() and fut.result().current_state.label == "inactive":
                raise RuntimeError(f"the node could not load the model (see {log_path})")
        time.sleep(0.3)
    raise TimeoutError(f"the node did not become active in time (see {log_path})")


def _report(got: dict, out_dir: Path, random_weights: bool, model: str, query: str,
            to_rgb: Any, pil: Any) -> int:
    res = got["result"]
    label = f" [{RANDOM_LABEL}]" if random_weights else ""
    summary = {
        "model": model,
        "random_weights": random_weights,
        "query": query,
        "answer": res.answer,
        "success": res.success,
        "error": res.error,
        "frame": {"frame_id": res.header.frame_id,
                  "stamp": [res.header.stamp.sec, res.header.stamp.nanosec]},
        "instances": [{"bbox": [i.x_min, i.y_min, i.x_max, i.y_max], "area": i.area,
                       "score": round(float(i.score), 4)} for i in res.instances],
        "timings_ms": {k: round(float(getattr(res, f"{k}_ms")), 1) for k in
                       ("wait", "preprocess", "generate", "mask", "postprocess", "total")},
    }
    if not res.success:
        print(f"[demo] error result: {res.error}{label}", flush=True)
        (out_dir / "result.json").write_text(json.dumps(summary, indent=2))
        return 1
    print(f"[demo] answer: {res.answer!r}{label}", flush=True)
    print(f"[demo] {len(res.instances)} mask(s); total {res.total_ms:.0f} ms", flush=True)
    if "overlay" in got:
        overlay = np.array(to_rgb(got["overlay"]))
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
