"""`stamp-ros bench` and `bench --node-overhead` print one JSON object with the documented keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TOP_KEYS = {
    "shape", "device", "device_type", "device_name", "cpu_model", "versions", "image_size",
    "cases", "soak", "peak_rss_mb", "goals", "decode_mode", "ros_messages",
}
STAGE_KEYS = {
    "convert", "preprocess", "vision", "prefill", "decode", "decode_per_token", "mask",
    "postprocess", "publish", "total", "e2e",
}
CASE_KEYS = {
    "fast_ms", "reference_ms", "e2e_ms", "speedup_total", "speedup_mask", "continuous",
    "same_frame_second_query_ms", "answer_tokens", "num_segs", "grid",
}


def test_bench_quick_prints_json(tmp_path):
    out_file = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "stamp_ros.cli", "bench", "--quick", "--size", "64x48",
            "--segs", "1,3", "--soak", "2", "--work-dir", str(tmp_path), "--out", str(out_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,  # a deadline against a hang, not a speed check: loaded CI machines are slow
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert json.loads(out_file.read_text()) == data
    assert set(data) >= TOP_KEYS
    assert data["image_size"] == [64, 48] and data["device_type"] == "cpu"
    assert data["versions"]["torch"] and data["versions"]["transformers"]
    assert set(data["cases"]) == {"1_seg", "3_seg"}
    for n, case in ((1, data["cases"]["1_seg"]), (3, data["cases"]["3_seg"])):
        assert set(case) >= CASE_KEYS
        assert case["num_segs"] == n and case["answer_ok"]
        assert 15 <= case["answer_tokens"] <= 25  # scripted, comparable answer lengths
        for path in ("fast_ms", "reference_ms"):
            assert set(case[path]) >= STAGE_KEYS
        for path in ("fast", "reference"):
            assert case["e2e_ms"][path]["p50"] > 0 and case["e2e_ms"][path]["p90"] > 0
        assert case["continuous"]["forced_fps"] > 0 and case["continuous"]["full_fps"] > 0
        assert case["same_frame_second_query_ms"]["vision"] < 1.0  # prefix reused
    soak = data["soak"]
    assert soak["requests"] == 2 and {"rss_mb", "cuda_allocated_mb"} <= set(soak["start"])
    # The goals say what the measured numbers say (CPU: judged on the per-path minimum).
    one, three = data["cases"]["1_seg"], data["cases"]["3_seg"]
    total = one["e2e_ms"]["reference"]["min"] / one["e2e_ms"]["fast"]["min"]
    mask = three["reference_min_ms"]["mask"] / three["fast_min_ms"]["mask"]
    assert one["speedup_total_min"] == pytest.approx(total, rel=0.02, abs=0.02)
    assert three["speedup_mask_min"] == pytest.approx(mask, rel=0.02, abs=0.02)
    assert data["goals"] == {
        "fast_e2e_1seg_>=1.5x": one["speedup_total_min"] >= 1.5,
        "fast_mask_3seg_>=3x": three["speedup_mask_min"] >= 3.0,
    }


NODE_OVERHEAD_STAGES = {
    "rgb8_image_to_numpy", "bgr8_image_to_rgb", "jpeg_compressed_to_rgb",
    "mono8_mask_image_build", "render_overlay_only", "overlay_image_build",
    "segmentation_msg_1_instance", "union_mask_msg_1_instance",
}


def test_bench_node_overhead_prints_json(tmp_path):
    """``--node-overhead``: the node's per-frame CPU work, same keys as the committed results."""
    pytest.importorskip("sensor_msgs.msg")
    out_file = tmp_path / "overhead.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "stamp_ros.cli", "bench", "--node-overhead", "--repeats", "2",
            "--size", "320x240", "--out", str(out_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,  # a deadline against a hang, not a speed check: loaded CI machines are slow
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert json.loads(out_file.read_text()) == data
    committed = json.loads((REPO / "bench/results/cpu-node-overhead.json").read_text())
    assert set(data) == set(committed)
    assert data["frame"] == "320x240" and data["runs"] == 2 and data["ros_python_check_fields"]
    assert set(data["results"]) == NODE_OVERHEAD_STAGES
    assert set(data["totals"]) == set(committed["totals"])
    assert all(v["median_ms"] >= 0 for v in data["results"].values())
