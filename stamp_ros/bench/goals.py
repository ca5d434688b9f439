"""The engine benchmark's pass/fail goals (the table in bench/README.md), from its report."""

from __future__ import annotations


def goals(report: dict) -> dict[str, bool]:
    """Goal name -> met, for the goals that apply to the report's device and cases."""
    cases = report["cases"]
    out: dict[str, bool] = {}
    one, three = cases.get("1_seg"), cases.get("3_seg")
    if report["device_type"] == "cpu":
        # Shared CPUs: judged on the per-path minimum (the p50 ratios are reported too).
        if one:
            out["fast_e2e_1seg_>=1.5x"] = one["speedup_total_min"] >= 1.5
        if three:
            out["fast_mask_3seg_>=3x"] = three["speedup_mask_min"] >= 3.0
        return out
    if one:
        out["fast_e2e_p50_1seg_<=100ms"] = one["e2e_ms"]["fast"]["p50"] <= 100.0
        out["fast_1seg_>=5x_reference"] = one["speedup_total"] >= 5.0
        out["continuous_forced_>=30fps"] = (one["continuous"]["forced_fps"] or 0) >= 30.0
    peaks = [c.get("cuda_peak_mb", 0.0) for c in cases.values()]
    if peaks:
        out["cuda_peak_<=6GB"] = max(peaks) <= 6 * 1024
    s = report.get("soak")
    if s and s.get("cuda_growth_mb") is not None:
        out["no_cuda_growth_over_soak"] = s["cuda_growth_mb"] <= 16.0
    return out
