#!/usr/bin/env python3
"""Cost of a conversation's follow-up turn vs a fresh one-shot request on the same frame.

Prints ONE JSON object. Random weights with a real architecture (``--shape mid`` by default,
the engine benchmark's CPU-sized model; a shape JSON for STAMP-2B/7B) and the photo
``../shared/data/horses.jpg`` (or ``--image``), ``--size`` pixels. Per repeat, on a new frame:

* ``one_shot``: the first question on the frame (prefix cache empty): preprocessing, the vision
  tower, prefill, decoding, mask pass;
* ``follow_up_image_first``: the second turn with the image in the first turn (the layout the
  node uses for conversations): its prompt starts with the same system + image prefix, so the
  prefix cache skips preprocessing and the vision tower;
* ``follow_up_image_last``: the same second turn with the image in the last turn (the engine's
  default for a history): the earlier turn comes before the image, the prefix differs, nothing
  is reused.

    PYTHONPATH=. .venv/bin/python bench/conversation.py --out bench/results/cpu-conversation.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FOLLOW_UP = "Now the one on its left. Please respond with segmentation mask."


def main() -> int:
    from stamp_ros.bench.inputs import ANSWERS, QUERY, bench_frames, load_shape
    from stamp_ros.bench.machine import cpu_model, versions
    from stamp_ros.engine.segmenter import StampSegmenter
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="mid")
    parser.add_argument("--image", default=str(ROOT.parent / "shared" / "data" / "horses.jpg"))
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    image = args.image if Path(args.image).is_file() else None

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_test_checkpoint(Path(tmp) / "ckpt", seed=0, answer=ANSWERS[1],
                                    shape=load_shape(args.shape))
        seg = StampSegmenter.from_pretrained(str(ckpt), device=args.device)
        seg.warmup()
        frames = bench_frames(image, args.size, args.repeats)
        runs: dict[str, list[float]] = {"one_shot": [], "follow_up_image_first": [],
                                        "follow_up_image_last": []}
        vision: dict[str, list[float]] = {k: [] for k in runs}
        for frame in frames:
            seg.clear_prefix_cache()
            first = seg.segment(frame, QUERY, [], image_in_first_turn=True)
            history = [(QUERY, seg.history_answer(first))]
            cases = {
                "one_shot": (first, None),
                "follow_up_image_first": (seg.segment(frame, FOLLOW_UP, history,
                                                      image_in_first_turn=True), None),
                "follow_up_image_last": (seg.segment(frame, FOLLOW_UP, history), None),
            }
            for name, (result, _) in cases.items():
                runs[name].append(result.timings_ms["total"])
                vision[name].append(result.timings_ms.get("vision", 0.0))
    report = {
        "what": "follow-up turn vs fresh one-shot request on the same frame (engine, ms)",
        "machine": cpu_model() if args.device == "cpu" else args.device,
        "shape": args.shape, "size": args.size, "repeats": args.repeats,
        "image": Path(image).name if image else "synthetic",
        "total_ms_median": {k: round(statistics.median(v), 1) for k, v in runs.items()},
        "vision_ms_median": {k: round(statistics.median(v), 1) for k, v in vision.items()},
        "follow_up_speedup_image_first": round(
            statistics.median(runs["one_shot"]) / statistics.median(
                runs["follow_up_image_first"]), 2),
        "follow_up_speedup_image_last": round(
            statistics.median(runs["one_shot"]) / statistics.median(
                runs["follow_up_image_last"]), 2),
        "versions": versions(),
    }
    from stamp_ros.bench.command import write_report

    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
