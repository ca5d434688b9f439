"""``stamp-ros eval --compare a.jsonl b.jsonl``: which setting is better, and on which samples.

Two runs' per-sample records are matched by key (dataset/split/id). For the samples both scored:
cIoU and gIoU of each run (on exactly those samples, so the comparison is fair even when one run
was limited or had bad samples), the per-sample IoU deltas (b - a), how many improved or got
worse, and the samples that *flipped*: crossed the IoU threshold (0.5 by default) from a miss
to a hit or back. Samples only one run has are counted, not compared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stamp_ros.engine.errors import InputError
from stamp_ros.eval.metrics import SplitScore
from stamp_ros.eval.records import read_jsonl
from stamp_ros.eval.runner import record_score

__all__ = ["compare_runs", "format_comparison"]

_TIE = 1e-9


def _load(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise InputError(f"--compare: {path} is not a file (give two samples.jsonl files)")
    out: dict[str, dict] = {}
    for rec in read_jsonl(path):
        out.setdefault(rec["key"], rec)
    if not out:
        raise InputError(f"--compare: {path} holds no per-sample records")
    return out


def _settings(path: Path) -> dict[str, Any]:
    """The run's settings from the summary.json next to its samples file, when there is one."""
    summary = path.parent / "summary.json"
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {"model": data.get("model"), "dtype": data.get("dtype"), **data.get("settings", {})}


def compare_runs(a_path: str | Path, b_path: str | Path, *, variant: str = "grid",
                 threshold: float = 0.5, top: int = 10) -> dict[str, Any]:
    """The comparison of two per-sample files as a dict (see the module docstring)."""
    a_path, b_path = Path(a_path), Path(b_path)
    a, b = _load(a_path), _load(b_path)
    splits: dict[str, dict[str, Any]] = {}
    deltas = []
    for key in a.keys() & b.keys():
        sa, sb = record_score(a[key], variant), record_score(b[key], variant)
        if sa is None or sb is None:
            continue
        name = key.rsplit("/", 1)[0]
        s = splits.setdefault(name, {"a": SplitScore(), "b": SplitScore(), "improved": 0,
                                     "worse": 0, "same": 0, "to_hit": 0, "to_miss": 0})
        s["a"].add(sa)
        s["b"].add(sb)
        d = sb.iou - sa.iou
        s["improved" if d > _TIE else "worse" if d < -_TIE else "same"] += 1
        flip = ""
        if sa.iou < threshold <= sb.iou:
            s["to_hit"] += 1
            flip = "miss->hit"
        elif sb.iou < threshold <= sa.iou:
            s["to_miss"] += 1
            flip = "hit->miss"
        deltas.append({"key": key, "text": b[key].get("text", ""), "iou_a": sa.iou,
                       "iou_b": sb.iou, "delta": d, "flip": flip})
    deltas.sort(key=lambda x: (x["delta"], x["key"]))
    per_split = {}
    for name in sorted(splits):
        s = splits[name]
        ds = [x["delta"] for x in deltas if x["key"].rsplit("/", 1)[0] == name]
        per_split[name] = {
            "compared": s["a"].count,
            "a": {"ciou": s["a"].ciou, "giou": s["a"].giou},
            "b": {"ciou": s["b"].ciou, "giou": s["b"].giou},
            "mean_iou_delta": math.fsum(ds) / len(ds) if ds else None,
            "improved": s["improved"], "worse": s["worse"], "same": s["same"],
            "flipped_to_hit": s["to_hit"], "flipped_to_miss": s["to_miss"],
        }
    return {
        "a": str(a_path), "b": str(b_path), "variant": variant, "threshold": threshold,
        "settings": {"a": _settings(a_path), "b": _settings(b_path)},
        "only_in_a": len(a.keys() - b.keys()), "only_in_b": len(b.keys() - a.keys()),
        "not_scored_in_one": len(a.keys() & b.keys()) - len(deltas),
        "splits": per_split,
        "flipped": [x for x in deltas if x["flip"]],
        "largest_drops": deltas[:top],
        "largest_gains": sorted(deltas[-top:], key=lambda x: -x["delta"]) if top else [],
        "deltas": deltas,
    }


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def format_comparison(c: Mapping[str, Any], top: int = 10) -> str:
    """The comparison as text for a terminal."""
    lines = [f"a: {c['a']}", f"b: {c['b']}"]
    sa, sb = c["settings"]["a"], c["settings"]["b"]
    changed = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
    if changed:
        lines.append("settings that differ: " + ", ".join(
            f"{k} {sa.get(k)!r} -> {sb.get(k)!r}" for k in changed))
    lines.append(f"mask: {c['variant']}; flip threshold IoU {c['threshold']:g}; "
                 f"only in a: {c['only_in_a']}, only in b: {c['only_in_b']}, "
                 f"scored in one run only: {c['not_scored_in_one']}")
    lines.append("")
    lines.append(f"{'split':<24} {'n':>6} {'cIoU a':>8} {'cIoU b':>8} {'gIoU a':>8} "
                 f"{'gIoU b':>8} {'mean dIoU':>9} {'better':>7} {'worse':>7} {'->hit':>6} "
                 f"{'->miss':>6}")
    for name, s in c["splits"].items():
        md = s["mean_iou_delta"]
        lines.append(
            f"{name:<24} {s['compared']:>6} {_pct(s['a']['ciou']):>8} {_pct(s['b']['ciou']):>8} "
            f"{_pct(s['a']['giou']):>8} {_pct(s['b']['giou']):>8} "
            f"{('—' if md is None else f'{100 * md:+.2f}'):>9} {s['improved']:>7} "
            f"{s['worse']:>7} {s['flipped_to_hit']:>6} {s['flipped_to_miss']:>6}")
    for title, rows in (("flipped", c["flipped"][:top]), ("largest drops", c["largest_drops"]),
                        ("largest gains", c["largest_gains"])):
        rows = [r for r in rows if title == "flipped" or abs(r["delta"]) > _TIE]
        if not rows:
            continue
        more = len(c["flipped"]) - len(rows) if title == "flipped" else 0
        lines += ["", f"{title}" + (f" (first {len(rows)} of {len(c['flipped'])})" if more else "")
                  + ":"]
        for r in rows:
            lines.append(f"  {r['key']}: IoU {100 * r['iou_a']:.1f} -> {100 * r['iou_b']:.1f} "
                         f"({100 * r['delta']:+.1f}) {r['flip']}  {r['text'][:60]!r}")
    return "\n".join(lines)
