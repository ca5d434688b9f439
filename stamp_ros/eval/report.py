"""What a finished evaluation writes for people: the JSON summary, the paper-style Markdown table
and the worst samples as overlay images.

All numbers come from the per-sample records (one record per sample, gathered from every rank),
so the summary of a resumed or a multi-GPU run is computed exactly like that of a single run.
Metrics are fractions in the JSON and percentages (as the paper prints them) in the table.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stamp_ros.eval.cocomask import decode_rle
from stamp_ros.eval.metrics import SplitScore, percentiles
from stamp_ros.eval.published import GREF_SPLITS, PUBLISHED_AVG, REFER_TABLE, published
from stamp_ros.eval.runner import DATA_ERROR, INFERENCE_ERROR, record_score
from stamp_ros.eval.samples import Sample, Split

__all__ = ["markdown_table", "split_summary", "write_worst"]

logger = logging.getLogger("stamp_ros.eval")

BAD_SAMPLE_POLICY = (
    "data errors (missing image, undecodable annotation) are excluded from the metrics; "
    "inference errors are scored as an empty prediction"
)
STAGES = ("total", "preprocess", "vision", "prefill", "decode", "mask", "postprocess")
MAX_ERRORS_LISTED = 20


def _variant(records: Sequence[Mapping], variant: str) -> SplitScore:
    """The sums of one mask variant ("grid", "sam", "union") over the scored records."""
    total = SplitScore()
    for rec in records:
        sc = record_score(rec, variant)
        if sc is not None:
            total.add(sc)
    return total


def _mask_count(n: int) -> str:
    return "3+" if n >= 3 else str(n)


def split_summary(split: Split, records: Sequence[Mapping], *, refine: bool,
                  family: str | None) -> dict[str, Any]:
    """Metrics and counts of one split from its records (in the split's sample order)."""
    status = Counter(rec.get("status") for rec in records)
    grid = _variant(records, "grid")
    out: dict[str, Any] = {
        "dataset": split.dataset,
        "split": split.split,
        "samples": len(records),
        "scored": grid.count,
        "excluded": status.get(DATA_ERROR, 0),
        "scored_as_empty": status.get(INFERENCE_ERROR, 0),
        "grid": grid.result(),
    }
    variants = {"grid": grid}
    if refine:
        sam = _variant(records, "sam")
        out["sam"] = sam.result()
        variants["sam"] = sam
    pub = {v: published(family, v, split.dataset, split.split) for v in variants}
    out["published"] = {v: p for v, p in pub.items() if p}
    union = _variant(records, "union")
    ok = [r for r in records if r.get("status") == "ok"]
    out["extras"] = {
        "union_of_masks": union.result(),
        "targets": {v: s.target_result() for v, s in variants.items()},
        "latency_ms": {
            stage: percentiles(r["timings_ms"][stage] for r in ok if stage in r["timings_ms"])
            for stage in STAGES
        },
        "masks_per_answer": dict(sorted(Counter(
            _mask_count(int(r.get("num_masks", 0))) for r in ok).items())),
    }
    out["notes"] = dict(split.notes)
    out["errors"] = [
        {"key": r["key"], "status": r["status"], "error": r.get("error", "")}
        for r in records if r.get("status") in (DATA_ERROR, INFERENCE_ERROR)
    ][:MAX_ERRORS_LISTED]
    return out


# --------------------------------------------------------------------------- Markdown


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _cell(measured: float | None, pub: float | None) -> str:
    text = _pct(measured)
    return f"{text} ({pub:g})" if pub is not None else text


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The results laid out like the paper's tables, the published number beside each cell."""
    splits: Mapping[str, Mapping] = summary["splits"]
    family = summary.get("model_family")
    refine = summary["settings"].get("refine") == "sam"
    variants = [("grid", "grid only")] + ([("sam", "+ SAM")] if refine else [])
    lines = [f"# stamp-ros eval: {summary['model']}", ""]
    st = summary["settings"]
    lines.append(
        f"dtype {summary.get('dtype')}, pixels {st['min_pixels']}..{st['max_pixels']}, "
        f"prompt {st['prompt']}" + (f" (seed {st['seed']})" if st["prompt"] == "template" else "")
        + f", max_new_tokens {st['max_new_tokens']}, mask upsampling {st['mask_upsample']}, "
        f"{summary['machine']['ranks']} process(es) on {summary['machine']['device_name']}."
    )
    lines.append("")
    ref = {key: splits.get(f"{key[0]}/{key[1]}") for key in REFER_TABLE}
    if any(ref.values()):
        who = family or "unknown model: no published row"
        lines += [f"## RefCOCO / RefCOCO+ / RefCOCOg, cIoU (%): measured (published {who})", ""]
        lines.append("| mask | " + " | ".join(
            f"{d.replace('refcoco', 'RefCOCO').replace('RefCOCOg', 'RefCOCOg')} {s}"
            for d, s in REFER_TABLE) + " | avg |")
        lines.append("|---" * (len(REFER_TABLE) + 2) + "|")
        for v, label in variants:
            cells, values = [], []
            for key in REFER_TABLE:
                s = ref[key]
                measured = s[v]["ciou"] if s and v in s else None
                values.append(measured)
                cells.append(_cell(measured, published(family, v, *key).get("ciou")))
            avg = (math.fsum(values) / len(values)) if all(x is not None for x in values) else None
            cells.append(_cell(avg, PUBLISHED_AVG.get((family, v))))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    gref = {s: splits.get(f"grefcoco/{s}") for s in GREF_SPLITS}
    if any(gref.values()):
        lines += [f"## gRefCOCO, gIoU / cIoU (%): measured (published {family or '—'})", ""]
        lines.append("| mask | " + " | ".join(f"{s} gIoU | {s} cIoU" for s in GREF_SPLITS) + " |")
        lines.append("|---" * (2 * len(GREF_SPLITS) + 1) + "|")
        for v, label in variants:
            cells = []
            for s in GREF_SPLITS:
                m = gref[s][v] if gref[s] and v in gref[s] else {}
                pub = published(family, v, "grefcoco", s)
                cells.append(_cell(m.get("giou"), pub.get("giou")))
                cells.append(_cell(m.get("ciou"), pub.get("ciou")))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    own = [name for name, s in splits.items() if s["dataset"] in ("jsonl", "bag")]
    if own:
        lines += ["## Own data (%)", "",
                  "| split | mask | samples | cIoU | gIoU |", "|---|---|---|---|---|"]
        for name in own:
            s = splits[name]
            for v, label in variants:
                lines.append(f"| {name} | {label} | {s[v]['samples']} | {_pct(s[v]['ciou'])} | "
                             f"{_pct(s[v]['giou'])} |")
        lines.append("")
    lines += ["## Extras (not part of the paper's protocol)", "",
              "| split | union of all masks cIoU / gIoU | no-target acc | target acc | "
              "masks per answer | latency p50 / p90 (ms) |", "|---|---|---|---|---|---|"]
    for name, s in splits.items():
        ex = s["extras"]
        t = ex["targets"]["grid"]
        lat = ex["latency_ms"].get("total") or {}
        union = ex["union_of_masks"]
        lines.append(
            f"| {name} | {_pct(union['ciou'])} / {_pct(union['giou'])}"
            f" | {_pct(t['no_target_accuracy'], 1)} ({t['no_target_samples']})"
            f" | {_pct(t['target_accuracy'], 1)} ({t['target_samples']})"
            f" | {', '.join(f'{k}: {n}' for k, n in ex['masks_per_answer'].items()) or '—'}"
            f" | {_ms(lat.get('p50'))} / {_ms(lat.get('p90'))} |"
        )
    lines += ["", "## Samples", "",
              "| split | samples | scored | excluded | scored as empty |", "|---|---|---|---|---|"]
    for name, s in splits.items():
        lines.append(f"| {name} | {s['samples']} | {s['scored']} | {s['excluded']} | "
                     f"{s['scored_as_empty']} |")
    lines += ["", f"Bad samples: {BAD_SAMPLE_POLICY}.",
              "Published numbers: the STAMP paper's tables as given in "
              "shared/docs/eval-protocol.md; the paper's runs drew template questions at random "
              "and sampled SAM points unseeded.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- worst samples


def _caption_lines(text: str, width: int) -> list[str]:
    from stamp_ros.render.overlay import displayable_ascii

    words, lines, line = displayable_ascii(text).split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines[:5]


def render_comparison(image: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                      caption: str, min_side: int = 480, max_side: int = 960) -> np.ndarray:
    """RGB image: the photo dimmed, ground truth only green, prediction only red, both yellow
    (ground-truth pixels of value 2, RefCOCO's overlaps, blue), a caption and legend below.
    Small images are enlarged (nearest, so mask edges stay pixel-exact), large ones reduced."""
    import cv2

    out = (image.astype(np.float32) * 0.45).astype(np.uint8)
    t1, p1 = truth == 1, pred > 0
    colours = {(True, False): (40, 220, 40), (False, True): (235, 40, 40),
               (True, True): (250, 220, 30)}
    for (t, p), colour in colours.items():
        sel = (t1 == t) & (p1 == p)
        out[sel] = (0.35 * out[sel] + 0.65 * np.array(colour)).astype(np.uint8)
    other = (truth > 1) & ~p1
    out[other] = (0.35 * out[other] + 0.65 * np.array((60, 110, 255))).astype(np.uint8)
    h, w = out.shape[:2]
    long_side = max(h, w)
    if long_side < min_side:
        f = -(-min_side // long_side)
        out = cv2.resize(out, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    elif long_side > max_side:
        scale = max_side / long_side
        out = cv2.resize(out, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    h, w = out.shape[:2]
    lines = _caption_lines(caption, max(20, w // 8))
    lines.append("green: truth only  red: prediction only  yellow: both  blue: overlap (2)")
    band = np.full((18 * len(lines) + 8, w, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(band, text, (4, 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([out, band], axis=0)


def write_worst(split: Split, records: Sequence[Mapping], out_dir: Path, k: int,
                samples: Mapping[str, Sample]) -> list[dict]:
    """The ``k`` lowest-IoU scored samples of a split as overlay PNGs; their list."""
    import cv2

    scored = [r for r in records if record_score(r) is not None and "pred" in r]
    scored.sort(key=lambda r: (r["grid"]["iou"], r["key"]))
    folder = out_dir / "worst" / f"{split.dataset}-{split.split}"
    written = []
    for rank, rec in enumerate(scored[:k], start=1):
        sample = samples.get(rec["key"])
        if sample is None or sample.image is None or sample.truth is None:
            continue
        try:
            image = sample.image()
            truth = sample.truth(image.shape[:2])
            pred = decode_rle(rec["pred"])
        except Exception as exc:  # data moved since the run: the list still says which
            logger.warning("worst sample %s: cannot render (%s)", rec["key"], exc)
            continue
        caption = (f"{rec['key']}  IoU {100 * rec['grid']['iou']:.1f}  |  {rec['prompt']}  |  "
                   f"answer: {rec.get('answer', '')}"
                   + (f"  |  {rec['status']}: {rec['error']}" if rec.get("error") else ""))
        picture = render_comparison(image, truth, pred, caption)
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in rec["id"])[:80]
        path = folder / f"{rank:02d}_{safe}.png"
        cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        written.append({"key": rec["key"], "iou": rec["grid"]["iou"],
                        "file": str(path.relative_to(out_dir))})
    return written


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
