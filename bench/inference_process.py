#!/usr/bin/env python3
"""What moving the model into its own process costs and buys: prints ONE JSON object.

Three parts (``--parts hop,memory,intake``):

* ``hop``: per-request overhead of the process hop at 640x480 and 1920x1080 (the tiny test
  model; the hop does not depend on the model), with the node's default ``inference_nice``
  (``hop``) and with 0 (``hop_nice_0``; under contention a niced process wakes up later):
  the caller's wall time of ``InferenceProcess.segment`` minus the engine's own wall time
  inside the process. That is the frame copied into its shared-memory slot, two pipe
  messages, the process's and the node's thread wake-ups, the mask written back into the slot
  and copied out. Also: the two halves of the mask question ("masks through shared memory, or
  grids + logits and the node upsamples"): copying a full-size mask out of the slot vs
  upsampling it from the grid in the node.
* ``memory``: resident memory of the node process (a real StampNode in a child process, its
  model the mid-size CPU shape) before configure, configured, active with the model loaded
  (plus its inference process), inactive, and after cleanup; two cycles.
* ``intake``: camera intake of the node (``input_rate_hz`` of its stats lines) from a 30 Hz
  1080p rgb8 stream over the shipped Fast DDS profile while the mid-size model infers non-stop
  in continuous mode. ``--baseline-root DIR`` runs the same against another checkout (e.g.
  ``git archive <commit>`` of the in-process node) for comparison, and the memory part too.

Usage (the numbers are only comparable on an idle machine; the load is recorded):

    .venv/bin/python bench/inference_process.py --out bench/results/cpu-inference-process.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--memory-child" not in sys.argv:  # the child imports the checkout under test (PYTHONPATH)
    sys.path.insert(0, str(ROOT))
PEER = ROOT / "test" / "peers" / "stream_peer.py"
SMALL_PIXELS = 16 * 28 * 28
STATS_PERIOD = 2.0


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 3)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "p90": pct(values, 0.9),
            "min": round(min(values), 3), "n": len(values)}


# ------------------------------------------------------------------------------ hop
def bench_hop(tmp: Path, repeats: int, nice: int) -> dict:
    import numpy as np

    from stamp_ros.engine.masks import nearest_source_index
    from stamp_ros.inference import InferenceProcess, LoadSpec
    from stamp_ros.inference.pool import thread_budget
    from stamp_ros.inference.slots import SlotRing
    from stamp_ros.testing.checkpoint import make_test_checkpoint
    from stamp_ros.testing.images import sample_image

    ckpt = tmp / "tiny"
    if not ckpt.exists():
        make_test_checkpoint(ckpt, answer="Sure, it is here: <|seg|>")
    threads = thread_budget(0, 1)  # what the node gives its process
    proc = InferenceProcess(LoadSpec(model=str(ckpt), device="cpu", min_pixels=SMALL_PIXELS,
                                     max_pixels=SMALL_PIXELS, max_new_tokens=24, warmup=False,
                                     threads=threads, nice=nice))
    proc.start()
    out: dict = {"model": "tiny test checkpoint (the hop does not depend on the model)",
                 "repeats": repeats, "process_threads": threads, "process_nice": nice}
    try:
        proc.warmup()
        for w, h in ((640, 480), (1920, 1080)):
            frames = [sample_image(i, h, w) for i in range(4)]
            hops, walls, engine = [], [], []
            for i in range(repeats + 2):
                t0 = time.perf_counter()
                res = proc.segment(frames[i % 4], "Please segment the object.")
                wall = (time.perf_counter() - t0) * 1000.0
                if i >= 2:  # the first ones grow the slot and map it
                    hops.append(res.hop_ms)
                    walls.append(wall)
                    engine.append(wall - res.hop_ms)
            # The two alternatives for the masks, measured on this frame size.
            ring = SlotRing(1)
            slot = ring.acquire()
            slot.write_frame(frames[0])
            view = np.ndarray((h, w), np.uint8, buffer=slot.shm.buf, offset=64)
            grid = (np.random.default_rng(0).random((h // 28, w // 28)) > 0.5).astype(np.uint8)
            rows, cols = nearest_source_index(grid.shape[0], h), nearest_source_index(
                grid.shape[1], w)
            copy_ms, upsample_ms = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                view.copy()
                copy_ms.append((time.perf_counter() - t0) * 1000.0)
                t0 = time.perf_counter()
                grid[rows][:, cols]
                upsample_ms.append((time.perf_counter() - t0) * 1000.0)
            del view
            ring.close()
            out[f"{w}x{h}"] = {
                "hop_ms": summary(hops),
                "segment_wall_ms": summary(walls),
                "engine_ms": summary(engine),
                "mask_copy_from_slot_ms": summary(copy_ms),
                "mask_upsample_in_node_ms": summary(upsample_ms),
                "instances": len(res.instances),
            }
    finally:
        proc.close()
    out["goal_ms"] = 3.0
    out["goal_met"] = all(out[k]["hop_ms"]["median"] <= 3.0 for k in ("640x480", "1920x1080"))
    return out


# ------------------------------------------------------------------------------ memory
def memory_child(checkpoint: str) -> None:
    """Runs in its own process: a StampNode, driven through its transitions; one JSON line."""
    import psutil
    import rclpy

    from stamp_ros.cli.malloc import return_large_buffers_to_the_os

    return_large_buffers_to_the_os()
    me = psutil.Process()
    rss = lambda: me.memory_info().rss / 2**20  # noqa: E731
    rclpy.init()
    from rclpy.parameter import Parameter

    from stamp_ros.inference.scheduler import Job
    from stamp_ros.ros.node import StampNode
    from stamp_ros.testing.images import sample_image

    params = [Parameter("model", value=checkpoint), Parameter("device", value="cpu"),
              Parameter("stats_period", value=0.0), Parameter("max_new_tokens", value=24)]
    node = StampNode(parameter_overrides=params)
    report: dict = {"before_configure_mb": rss(), "cycles": []}

    def ask() -> bool:
        import threading

        from stamp_ros.ros.kit import rgb_to_image_msg

        done = threading.Event()
        answer: list = []
        job = Job(request_id="bench", query="Please segment the object.", source="service",
                  asked_at=time.monotonic(), image_msg=rgb_to_image_msg(
                      sample_image(1, 480, 640)), camera=node._cameras[""],
                  done=lambda r: (answer.append(r), done.set()))
        node._submit(job)
        done.wait(600)
        return bool(answer and answer[0].success)

    for _ in range(2):
        cycle: dict = {}
        node.trigger_configure()
        cycle["configured_mb"] = rss()
        node.trigger_activate()
        cycle["answered"] = ask()
        cycle["active_mb"] = rss()
        children = [c for c in me.children(recursive=True)
                    if "stamp_ros.inference.process" in " ".join(c.cmdline())]
        cycle["inference_process_mb"] = sum(c.memory_info().rss for c in children) / 2**20
        node.trigger_deactivate()
        cycle["inactive_mb"] = rss()
        cycle["inference_process_gone"] = not any(c.is_running() for c in children)
        node.trigger_cleanup()
        cycle["after_cleanup_mb"] = rss()
        report["cycles"].append({k: round(v, 1) if isinstance(v, float) else v
                                 for k, v in cycle.items()})
    report["before_configure_mb"] = round(report["before_configure_mb"], 1)
    node.destroy_node()
    rclpy.try_shutdown()
    print("MEMORY " + json.dumps(report), flush=True)


def bench_memory(mid: Path, env: dict[str, str], root: Path) -> dict:
    env = dict(env, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, __file__, "--memory-child", str(mid)], env=env,
                          capture_output=True, text=True, timeout=1200, cwd=root)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")), None)
    if line is None:
        return {"error": (proc.stdout + proc.stderr)[-2000:]}
    report = json.loads(line[len("MEMORY "):])
    last = report["cycles"][-1]
    report["after_cleanup_minus_before_configure_mb"] = round(
        last["after_cleanup_mb"] - report["before_configure_mb"], 1)
    report["goal"] = "after cleanup within ~100 MB of before configure"
    report["goal_met"] = report["after_cleanup_minus_before_configure_mb"] <= 100
    return report


# ------------------------------------------------------------------------------ intake
def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds used so far by a process and by all its descendants."""
    import psutil

    def used(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return t.user + t.system

    node = psutil.Process(pid)
    return used(node), sum(used(c) for c in node.children(recursive=True))


def bench_intake(root: Path, mid: Path, seconds: float, tmp: Path, name: str,
                 infer: bool = True, extra_env: dict[str, str] | None = None,
                 nice: int | None = None) -> dict:
    from domain_coordinator import domain_id
    from transport import parse_stats, stop_all, wait_for  # bench/transport.py, beside this script

    from stamp_ros.cli.dds_profile import large_image_env

    with domain_id() as did:
        env = dict(os.environ, ROS_DOMAIN_ID=str(did), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_LOCALHOST_ONLY="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(root))
        env.update(large_image_env())
        env.update(extra_env or {})
        node_args = [sys.executable, "-m", "stamp_ros.cli.run_node", "--ros-args",
                     "-p", f"model:={mid}", "-p", "device:=cpu", "-p", "mode:=continuous",
                     "-p", f"stats_period:={STATS_PERIOD}"]
        if nice is not None:
            node_args += ["-p", f"inference_nice:={nice}"]
        logs = {k: tmp / f"{name}-{k}.log" for k in ("node", "peer", "query")}
        procs: list[subprocess.Popen] = []
        try:
            with logs["node"].open("w") as out:
                procs.append(subprocess.Popen(node_args, env=env, stdout=out,
                                              stderr=subprocess.STDOUT, cwd=root,
                                              start_new_session=True))
            wait_for(logs["node"], "warm-up done", procs[0], 600)
            query = ("import rclpy, time; from std_msgs.msg import String; rclpy.init(); "
                     "n = rclpy.create_node('q'); p = n.create_publisher(String, '/query', 10)\n"
                     "while p.get_subscription_count() < 1: time.sleep(0.05)\n"
                     "p.publish(String(data='Please segment the white horse in the image.'))\n"
                     "time.sleep(2.0); print('sent', flush=True)")
            if infer:
                subprocess.run([sys.executable, "-c", query], env=env, timeout=120,
                               check=True, capture_output=True)
                wait_for(logs["node"], "tracking", procs[0], 60)
            cpu0 = cpu_seconds(procs[0].pid)
            t_stream = time.monotonic()
            with logs["peer"].open("w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, str(PEER), "--topic", "/image", "--rate", "30",
                     "--width", "1920", "--height", "1080", "--duration", str(seconds)],
                    env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                    start_new_session=True))
            load_during = []
            while procs[1].poll() is None:
                time.sleep(5.0)  # sampling the load average, not a synchronisation
                load_during.append(os.getloadavg()[0])
            stream_s = time.monotonic() - t_stream
            cpu1 = cpu_seconds(procs[0].pid)
        finally:
            stop_all(procs, timeout=30)
    text = logs["node"].read_text(errors="replace")
    windows = [w for w in parse_stats(text) if w.get("input_rate_hz", 0) > 0][1:-1]
    rates = [w["input_rate_hz"] for w in windows]
    results = sum(w.get("result_rate_hz", 0.0) * STATS_PERIOD for w in windows)
    peer = re.search(r"done (\{.*\})", logs["peer"].read_text(errors="replace"))
    return {
        "root": str(root),
        "model_inferring": infer,
        "node_cpu_cores": round((cpu1[0] - cpu0[0]) / stream_s, 2),
        "inference_process_cpu_cores": round((cpu1[1] - cpu0[1]) / stream_s, 2),
        "published_hz": round(json.loads(peer.group(1))["rate_hz"], 1) if peer else None,
        "received_hz_median": round(statistics.median(rates), 1) if rates else 0.0,
        "received_hz_min": round(min(rates), 1) if rates else 0.0,
        "windows": len(windows),
        "results_in_windows": round(results),
        "window_s": STATS_PERIOD,
        "dropped_frames_last": windows[-1].get("dropped_frames") if windows else None,
        "stream_s": round(stream_s, 1),
        "load_1min_during": [round(v, 2) for v in load_during],
    }


def make_mid(tmp: Path) -> Path:
    from stamp_ros.bench.inputs import ANSWERS, load_shape
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp / "mid", answer=ANSWERS[1], shape=load_shape("mid"),
                                calibrate=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="hop,memory,intake")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=40.0, help="intake stream length")
    parser.add_argument("--baseline-root", type=Path,
                        help="another checkout (e.g. the node before this change, model "
                        "in-process) to run the memory and intake parts against too")
    parser.add_argument("--nice", type=int,
                        help="inference_nice of the intake nodes (default: the parameter's)")
    parser.add_argument("--intake-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the intake nodes")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    from stamp_ros.bench.machine import cpu_model

    parts = args.parts.split(",")
    report: dict = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores (shared with other users' jobs)",
        "python": platform.python_version(), "load_1min_5min_15min_before": load()}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if "hop" in parts:
            from stamp_ros.pipeline.params import BY_NAME

            default_nice = BY_NAME["inference_nice"].default
            for nice in (default_nice, 0):  # the node's default, and equal priority
                print(f"[bench] hop, niceness {nice}", file=sys.stderr, flush=True)
                key = "hop" if nice == default_nice else f"hop_nice_{nice}"
                report[key] = bench_hop(tmp, args.repeats, nice)
        mid = make_mid(tmp) if {"memory", "intake"} & set(parts) else None
        if "memory" in parts:
            print("[bench] memory", file=sys.stderr, flush=True)
            from domain_coordinator import domain_id

            with domain_id() as did:
                env = dict(os.environ, ROS_DOMAIN_ID=str(did), ROS_LOCALHOST_ONLY="1",
                           ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
                report["memory"] = bench_memory(mid, env, ROOT)
                if args.baseline_root:
                    report["memory_in_process_baseline"] = bench_memory(
                        mid, env, args.baseline_root.resolve())
        if "intake" in parts:
            report["intake"] = {}
            cases = [("inference_process", ROOT, True), ("inference_process_idle", ROOT, False)]
            if args.baseline_root:
                cases.append(("in_process_baseline", args.baseline_root.resolve(), True))
            extra = dict(kv.split("=", 1) for kv in args.intake_env)
            for name, root, infer in cases:
                print(f"[bench] intake {name}", file=sys.stderr, flush=True)
                report["intake"][name] = bench_intake(
                    root, mid, args.seconds, tmp, name, infer, extra,
                    args.nice if root == ROOT else None)
            report["intake"]["inference_nice"] = (
                args.nice if args.nice is not None else "default")
            report["intake"]["goal_hz"] = 28.0
            report["intake"]["goal_met"] = (
                report["intake"]["inference_process"]["received_hz_median"] >= 28.0)
    report["load_1min_5min_15min_after"] = load()
    from stamp_ros.bench.command import write_report

    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
