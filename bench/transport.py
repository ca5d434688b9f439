#!/usr/bin/env python3
"""Camera-frame intake of the stamp_ros node over DDS, per transport profile: prints ONE JSON.

For each stream (1080p rgb8 at 30 Hz, 720p rgb8 at 60 Hz, 1080p JPEG at 30 Hz) and each Fast
DDS set-up (the default transports, and config/fastdds_large_images.xml in every process) this
starts a camera stand-in (test/peers/stream_peer.py) and the real node (idle, tiny checkpoint,
``stats_period`` 2 s) in separate processes, each set-up in its own ROS domain with discovery on
localhost only, and reads what the node received from its ``stats:`` lines: frames per second
(``input_rate_hz``) and transport latency p50/p90 (receive time minus header stamp, one host
clock). A bare rclpy subscriber in place of the node gives the transport's own ceiling.
``--qos`` adds the reliability of both ends (camera publisher / node's ``image_reliability``):
``reliable/reliable`` (the default run), ``reliable/best_effort``, ``best_effort/best_effort``.

It runs with the interpreter it is started with, so run it once per distro venv:

    .venv/bin/python bench/transport.py --out bench/results/transport-kilted.json
    .venv-jazzy/bin/python bench/transport.py --out bench/results/transport-jazzy.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stamp_ros.cli.dds_profile import PROFILE_VARIABLES, large_image_env  # noqa: E402

PEER = ROOT / "test" / "peers" / "stream_peer.py"
STREAMS = {
    "1080p_rgb8_30hz": dict(width=1920, height=1080, rate=30, compressed=False),
    "720p_rgb8_60hz": dict(width=1280, height=720, rate=60, compressed=False),
    "1080p_jpeg_30hz": dict(width=1920, height=1080, rate=30, compressed=True),
}
STATS_PERIOD = 2.0
BARE_SUBSCRIBER = Path(__file__).resolve().parent / "bare_subscriber.py"
STATS_RE = re.compile(r"stats: (.*)")


def parse_stats(text: str) -> list[dict[str, float]]:
    """Every ``stats:`` line of a log as a dict of its numeric values."""
    windows = []
    for match in STATS_RE.finditer(text):
        values = {}
        for item in match.group(1).split(", "):
            key, _, value = item.partition("=")
            with contextlib.suppress(ValueError):
                values[key] = float(value)
        windows.append(values)
    return windows


def run_case(receiver: str, stream: dict, profile: bool, seconds: float, checkpoint: Path,
             tmp: Path, name: str, qos: str = "reliable/reliable") -> dict:
    from domain_coordinator import domain_id

    with domain_id() as did:
        env = dict(os.environ, ROS_DOMAIN_ID=str(did), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_LOCALHOST_ONLY="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")])))
        for key in PROFILE_VARIABLES:
            env.pop(key, None)
        if profile:
            env.update(large_image_env(environ=env))
        pub_reliability, node_reliability = qos.split("/")
        if receiver == "node":
            args = [sys.executable, "-m", "stamp_ros.cli.run_node", "--ros-args",
                    "-p", f"model:={checkpoint}", "-p", "device:=cpu",
                    "-p", f"stats_period:={STATS_PERIOD}",
                    "-p", f"image_reliability:={node_reliability}",
                    "-p", f"use_compressed:={'true' if stream['compressed'] else 'false'}"]
        else:
            args = [sys.executable, str(BARE_SUBSCRIBER), "--period", str(STATS_PERIOD),
                    "--reliability", node_reliability,
                    *(["--compressed"] if stream["compressed"] else [])]
        topic = "/image/compressed" if stream["compressed"] and receiver == "node" else "/image"
        peer_args = [sys.executable, str(PEER), "--topic", topic,
                     "--rate", str(stream["rate"]), "--width", str(stream["width"]),
                     "--height", str(stream["height"]), "--duration", str(seconds + 4),
                     "--reliability", pub_reliability,
                     *(["--compressed"] if stream["compressed"] else [])]
        logs = {k: tmp / f"{name}-{k}.log" for k in ("receiver", "peer")}
        procs = []
        try:
            with logs["receiver"].open("w") as out:
                procs.append(subprocess.Popen(args, env=env, stdout=out,
                                              stderr=subprocess.STDOUT, cwd=ROOT,
                                              start_new_session=True))
            if receiver == "node":  # stream once the model is loaded and warmed up
                wait_for(logs["receiver"], "warm-up done", procs[0], timeout=180)
            with logs["peer"].open("w") as out:
                procs.append(subprocess.Popen(peer_args, env=env, stdout=out,
                                              stderr=subprocess.STDOUT, cwd=ROOT,
                                              start_new_session=True))
            procs[1].wait(timeout=seconds + 120)
        finally:
            stop_all(procs, timeout=15)
        peer_log = logs["peer"].read_text(errors="replace")
        done = re.search(r"done (\{.*\})", peer_log)
        peer = json.loads(done.group(1)) if done else {"error": peer_log[-500:]}
        # Windows fully inside the stream, the first one (start-up) left out.
        receiver_log = logs["receiver"].read_text(errors="replace")
        windows = [w for w in parse_stats(receiver_log) if w.get("input_rate_hz", 0) > 0][1:-1]
        if not windows:
            print(f"[transport] {name}: no stats from the receiver:\n{receiver_log[-2000:]}",
                  file=sys.stderr)
    rates = [w["input_rate_hz"] for w in windows]
    p50 = [w["frame_latency_p50_ms"] for w in windows if "frame_latency_p50_ms" in w]
    p90 = [w["frame_latency_p90_ms"] for w in windows if "frame_latency_p90_ms" in w]
    return {
        "published_hz": round(peer.get("rate_hz", 0.0), 1),
        "received_hz_median": round(statistics.median(rates), 1) if rates else 0.0,
        "received_hz_min": round(min(rates), 1) if rates else 0.0,
        "latency_p50_ms": round(statistics.median(p50), 1) if p50 else None,
        "latency_p90_ms": round(statistics.median(p90), 1) if p90 else None,
        "windows": len(windows),
        "frame_bytes": peer.get("frame_bytes"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=14.0, help="stream length per case")
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--receivers", default="node,bare")
    parser.add_argument("--profiles", default="default,shm_profile")
    parser.add_argument("--qos", default="reliable/reliable",
                        help="comma-separated publisher/subscriber reliabilities, e.g. "
                        "reliable/reliable,reliable/best_effort,best_effort/best_effort")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from stamp_ros.bench.machine import cpu_model
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    report: dict = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "python":
                    platform.python_version(), "load_before": os.getloadavg(), "cases": {}}
    try:
        from importlib.metadata import version

        report["rclpy"] = next(v for v in (_ver(version, "ros-rclpy"),
                                           _ver(version, "ros-jazzy-rclpy")) if v)
        report["distro"] = "jazzy" if _ver(version, "ros-jazzy-rclpy") else "kilted"
    except StopIteration:
        report["distro"] = "unknown"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        checkpoint = make_test_checkpoint(tmp / "ckpt", seed=0)
        for stream_name in args.streams.split(","):
            for profile in (p == "shm_profile" for p in args.profiles.split(",")):
                for receiver in args.receivers.split(","):
                    for qos in args.qos.split(","):
                        name = (f"{stream_name}/{'shm_profile' if profile else 'default'}/"
                                f"{receiver}")
                        if qos != "reliable/reliable":
                            name += f"/{qos.replace('/', '-to-')}"
                        print(f"[transport] {name}", file=sys.stderr, flush=True)
                        report["cases"][name] = run_case(
                            receiver, STREAMS[stream_name], profile, args.seconds,
                            checkpoint, tmp, name.replace("/", "-"), qos)
                        report["cases"][name]["load_1min"] = round(os.getloadavg()[0], 2)
    from stamp_ros.bench.command import write_report

    write_report(report, args.out)
    return 0


def stop_all(procs: list[subprocess.Popen], timeout: float) -> None:
    """SIGINT to every process group still running (a clean shutdown, logs flushed), then
    SIGKILL to any that has not ended within ``timeout`` seconds."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    """Until ``text`` is in the process's log; raises with the log's tail if it ends first."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {log}:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _ver(version, name: str) -> str | None:
    try:
        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
