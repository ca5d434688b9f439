"""`stamp-ros bench --quick` prints one JSON object with the documented keys."""

from __future__ import annotations

import json
import subprocess
import sys

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
        timeout=90,
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
    assert "fast_e2e_1seg_>=1.5x" in data["goals"]
