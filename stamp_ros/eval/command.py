"""``stamp-ros eval``: the deployed engine measured on the paper's benchmarks or on own data.

Order of work: arguments; the data (every split listed, so a wrong path fails in seconds with one
line, before any model is loaded); the output folder and what it already holds (resume); the
torchrun job, if any; then the samples of this process's shard, the model loaded at the first
sample that needs it (a run whose samples are all done only rewrites the reports); last, rank 0
gathers every record and writes ``samples.jsonl``, ``summary.json``, ``table.md`` and ``worst/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stamp_ros.engine.errors import EngineError, InputError
from stamp_ros.engine.options import non_negative_int, positive_int

__all__ = ["cmd_eval", "register"]

logger = logging.getLogger("stamp_ros.eval")

EXIT_OK, EXIT_INTERRUPTED = 0, 130
OWN_DATASETS = ("jsonl", "bag")


def register(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.engine.options import add_model_options
    from stamp_ros.eval.prompts import PROMPT_MODES
    from stamp_ros.eval.refer import BENCHMARKS

    p = sub.add_parser(
        "eval",
        help="measure the engine on RefCOCO/+/g, gRefCOCO or own labelled data (JSONL, bags)",
        description="Evaluate the STAMP engine the node runs with the official referring "
        "segmentation protocol (cIoU, gIoU on the first mask). Rerun the same command to resume "
        "an interrupted run; run it under torchrun to spread the samples over GPUs.",
    )
    p.add_argument("--dataset",
                   help=f"{', '.join(BENCHMARKS)} (comma-separated for several), jsonl or bag")
    p.add_argument("--split", help="comma-separated splits (default: all of the dataset's: "
                   "val,testA,testB; refcocog val,test); jsonl/bag: the name to report")
    p.add_argument("--data-root", help="benchmarks: the folder holding refcoco/, refcoco+/, "
                   "refcocog/, grefcoco/ and images/coco_2014/train2014/; jsonl/bag: the folder "
                   "relative paths start from (default: the labels file's folder)")
    p.add_argument("--data", help="jsonl: the labels file; bag: the rosbag2 (dir or file)")
    p.add_argument("--labels", help="bag: the labels JSONL (stamp, query, mask/segmentation)")
    p.add_argument("--image-topic", help="bag: the sensor_msgs/Image or CompressedImage topic")
    p.add_argument("--stamp-tolerance", type=float, default=1e-6,
                   help="bag: largest |label stamp - header stamp| in seconds (default 1e-6)")
    p.add_argument("--out", help="output folder (default eval-results/<model>/<datasets>); "
                   "rerunning with the same folder resumes")
    p.add_argument("--prompt", choices=PROMPT_MODES, default=None,
                   help="sentence (default): the sentence is the query; template: the official "
                   "question templates, chosen per sample by --seed")
    p.add_argument("--seed", type=int, default=0, help="template choice seed (default 0)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's settings: min = max pixels 802816, max_new_tokens 1024, "
                   "--prompt template (explicit options still win)")
    p.add_argument("--limit", type=positive_int, help="only the first N samples of each split")
    p.add_argument("--worst", type=non_negative_int, default=10,
                   help="write the K lowest-IoU samples of each split as overlays (default 10)")
    p.add_argument("--retry-errors", action="store_true",
                   help="when resuming, run the samples that failed before again")
    p.add_argument("--json", action="store_true", help="print the summary (or comparison) "
                   "as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--compare", nargs=2, metavar=("A.jsonl", "B.jsonl"),
                   help="compare two runs' samples.jsonl: per-sample IoU deltas, flipped samples")
    p.add_argument("--compare-mask", choices=["grid", "sam", "union"], default="grid",
                   help="--compare: which mask's IoU (default grid)")
    p.add_argument("--flip-threshold", type=float, default=0.5,
                   help="--compare: a sample flips when its IoU crosses this (default 0.5)")
    p.add_argument("--top", type=non_negative_int, default=10,
                   help="--compare: how many flipped / largest changes to list")
    add_model_options(p)
    # None = "not given": --paper fills these, otherwise the engine's defaults do.
    p.set_defaults(min_pixels=None, max_pixels=None, max_new_tokens=None, handler=cmd_eval)


# --------------------------------------------------------------------------- arguments


def _resolve_settings(args: argparse.Namespace) -> None:
    from stamp_ros.engine.defaults import (
        DEFAULT_MAX_NEW_TOKENS,
        DEFAULT_MAX_PIXELS,
        DEFAULT_MIN_PIXELS,
    )
    from stamp_ros.eval.prompts import PAPER

    defaults = PAPER if args.paper else {
        "min_pixels": DEFAULT_MIN_PIXELS, "max_pixels": DEFAULT_MAX_PIXELS,
        "max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "prompt": "sentence"}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 0 < args.min_pixels <= args.max_pixels:
        raise InputError(f"need 0 < --min-pixels <= --max-pixels, got {args.min_pixels}, "
                         f"{args.max_pixels}")
    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be >= 1")


def _datasets(args: argparse.Namespace) -> list[str]:
    from stamp_ros.eval.refer import BENCHMARKS

    if not args.dataset:
        raise InputError("--dataset is required (or --compare A.jsonl B.jsonl)")
    names = [d.strip() for d in args.dataset.split(",") if d.strip()]
    known = (*BENCHMARKS, *OWN_DATASETS)
    for name in names:
        if name not in known:
            raise InputError(f"--dataset {name!r}: choose from {', '.join(known)}")
    if any(n in OWN_DATASETS for n in names) and len(names) > 1:
        raise InputError("--dataset jsonl/bag cannot be combined with other datasets")
    if len(set(names)) != len(names):
        raise InputError("--dataset names a dataset twice")
    return names


def _validate(args: argparse.Namespace, names: list[str]) -> None:
    if args.refine == "sam" and not (args.sam_checkpoint and Path(args.sam_checkpoint).is_file()):
        raise InputError("--refine sam needs --sam-checkpoint FILE (e.g. sam_vit_h_4b8939.pth)")
    if names[0] in OWN_DATASETS:
        if not args.data:
            raise InputError(f"--dataset {names[0]} needs --data (the "
                             f"{'labels JSONL' if names[0] == 'jsonl' else 'bag'})")
        if not Path(args.data).exists():
            raise InputError(f"--data {args.data}: not found")
        if names[0] == "bag" and not (args.labels and args.image_topic):
            raise InputError("--dataset bag needs --labels FILE.jsonl and --image-topic TOPIC")
    elif not args.data_root:
        raise InputError(f"--dataset {','.join(names)} needs --data-root (the folder with "
                         f"{names[0]}/ and images/coco_2014/train2014/)")
    if not (args.stamp_tolerance >= 0):
        raise InputError("--stamp-tolerance must be >= 0")


def _load_splits(args: argparse.Namespace, names: list[str]) -> tuple[list, Any]:
    """The splits to run (and, for a bag, the open frame source to close afterwards)."""
    from stamp_ros.eval.refer import BENCHMARKS, load_benchmark_splits

    requested = [s.strip() for s in (args.split or "").split(",") if s.strip()]
    if names[0] == "jsonl":
        from stamp_ros.eval.labels import load_jsonl_split

        if len(requested) > 1:
            raise InputError("--dataset jsonl has one split (name it with one --split)")
        return [load_jsonl_split(args.data, args.data_root,
                                 requested[0] if requested else None)], None
    if names[0] == "bag":
        try:
            import rosbags  # noqa: F401
        except ImportError:
            raise InputError("--dataset bag needs the rosbags library: pip install "
                             "'stamp-ros[bag]' (or pip install rosbags)") from None
        from stamp_ros.eval.bag_data import load_bag_split

        split, frames = load_bag_split(args.data, args.labels, args.image_topic,
                                       data_root=args.data_root,
                                       tolerance_ns=round(args.stamp_tolerance * 1e9))
        if requested:
            if len(requested) > 1:
                raise InputError("--dataset bag has one split (name it with one --split)")
            split.split = requested[0]
            split.samples = [replace(s, split=requested[0]) for s in split.samples]
        return [split], frames
    splits = []
    for name in names:
        wanted = requested or list(BENCHMARKS[name].splits)
        splits += load_benchmark_splits(args.data_root, name, wanted)
    return splits, None


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that change a sample's result (their hash guards resumed folders)."""
    return {
        "model": str(args.model), "dtype": args.dtype, "attn": args.attn,
        "min_pixels": args.min_pixels, "max_pixels": args.max_pixels,
        "max_new_tokens": args.max_new_tokens, "mask_upsample": args.mask_upsample,
        "prompt": args.prompt, "seed": args.seed if args.prompt == "template" else None,
        "refine": args.refine,
        "sam_checkpoint": Path(args.sam_checkpoint).name if args.refine == "sam" else None,
    }


def _default_out(args: argparse.Namespace, names: list[str]) -> Path:
    model = Path(str(args.model).rstrip("/")).name or "model"
    tag = "+".join(names) + ("-paper" if args.paper else "") + (
        "-sam" if args.refine == "sam" else "")
    return Path("eval-results") / model / tag


# --------------------------------------------------------------------------- the command


def cmd_eval(args: argparse.Namespace) -> int:
    if args.compare:
        return _cmd_compare(args)
    names = _datasets(args)
    _resolve_settings(args)
    _validate(args, names)
    from stamp_ros.eval.cocomask import coco_mask_api

    try:  # every sample's ground truth and every record's mask need it: fail once, up front
        coco_mask_api()
    except ImportError as exc:
        raise InputError(str(exc)) from None
    splits, frames = _load_splits(args, names)
    try:
        return _run(args, names, splits)
    except KeyboardInterrupt:
        print("stamp-ros eval: interrupted; every finished sample is saved, rerun the same "
              "command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if frames is not None:
            frames.close()


def _run(args: argparse.Namespace, names: list[str], splits: list) -> int:
    from stamp_ros.eval.distributed import DistContext, shard
    from stamp_ros.eval.progress import EvalProgress
    from stamp_ros.eval.records import config_fingerprint, load_records
    from stamp_ros.eval.runner import RunSettings, run_samples

    started = time.time()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for split in splits:
        if args.limit:
            split.samples = split.samples[: args.limit]
        if not split.samples:
            logger.warning("%s has no samples", split.name)
    samples = [s for split in splits for s in split.samples]
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise InputError("two samples share a key (dataset/split/id); ids must be unique")
    config = _config(args)
    fingerprint = config_fingerprint(config)
    out_dir = Path(args.out) if args.out else _default_out(args, names)
    done = load_records(out_dir, fingerprint) if out_dir.exists() else {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # One probe per process: torchrun's ranks check the same directory at once, and a
        # shared name let one rank unlink the other's probe (ENOENT, the run failed).
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot write there ({exc})") from exc

    dist = DistContext.from_env(args.device)
    try:
        args.device = dist.device(args.device)
        mine = shard(samples, [s.group for s in samples], dist.rank, dist.world)
        settings = RunSettings(prompt=args.prompt, seed=args.seed, refine=args.refine == "sam",
                               mask_upsample=args.mask_upsample, fingerprint=fingerprint,
                               retry_errors=args.retry_errors)
        label = f"eval rank {dist.rank}/{dist.world}" if dist.active else "eval"
        progress = EvalProgress(len(mine), label=label,
                                enabled=not args.quiet and dist.is_main)

        def make_segmenter() -> Any:
            from stamp_ros.engine.options import segmenter_from_args

            logger.info("loading %s on %s", args.model, args.device)
            return segmenter_from_args(args)

        records, resumed = run_samples(mine, done, settings, out_dir, dist.rank,
                                       make_segmenter, progress)
        gathered = dist.gather((records, resumed))
        if not dist.is_main:
            return EXIT_OK
        new = {rec["key"]: rec for part, _ in gathered for rec in part}
        count = sum(len(part) for part, _ in gathered)
        if count != len(samples) or new.keys() != set(keys):
            raise EngineError(f"the ranks returned {count} records for {len(new)} distinct "
                              f"samples; the split has {len(samples)} (a sharding bug)")
        run_info = {"started": started, "load_start": load_start,
                    "resumed": sum(n for _, n in gathered)}
        summary = _report(args, names, splits, samples, new, done, out_dir, dist, config,
                          fingerprint, run_info)
    finally:
        dist.close()
    if args.json:
        print(json.dumps(summary))
    else:
        print((out_dir / "table.md").read_text(encoding="utf-8"))
        print(f"results: {out_dir}/ (summary.json, table.md, samples.jsonl, worst/)")
    return EXIT_OK


def _report(args, names, splits, samples, new, done, out_dir, dist, config, fingerprint,
            run_info) -> dict[str, Any]:
    """Rank 0, after the gather: samples.jsonl, worst/, summary.json and table.md."""
    from stamp_ros.bench.machine import cpu_model, versions
    from stamp_ros.eval.published import model_family
    from stamp_ros.eval.records import write_merged
    from stamp_ros.eval.report import markdown_table, split_summary, write_json, write_worst

    ordered = [new[s.key] for s in samples]
    known = set(new)
    extra = [rec for key, rec in sorted(done.items()) if key not in known]
    write_merged(out_dir, [*ordered, *extra])
    by_key = {s.key: s for s in samples}
    family = model_family(args.model)
    dtypes = sorted({r["dtype"] for r in ordered if r.get("dtype")})
    devices = sorted({r["device"] for r in ordered if r.get("device")})
    device_name = _device_name(devices) if devices else cpu_model()
    per_split = {}
    for split in splits:
        recs = [new[s.key] for s in split.samples]
        s = split_summary(split, recs, refine=args.refine == "sam", family=family)
        s["worst"] = write_worst(split, recs, out_dir, args.worst, by_key) if args.worst else []
        per_split[split.name] = s
    summary = {
        "model": str(args.model),
        "model_family": family,
        "dtype": ", ".join(dtypes) or args.dtype,
        "devices": devices,
        "attn": args.attn,
        "settings": {**config, "paper": bool(args.paper), "limit": args.limit,
                     "datasets": names},
        "fingerprint": fingerprint,
        "bad_sample_policy": _policy(),
        "metric_notes": "cIoU = sum(I)/(sum(U)+1e-5) and gIoU = mean(I/(U+1e-5)), U = 0 -> 1.0, "
                        "on the first mask; fractions in [0, 1]. 'extras' are not part of "
                        "the paper's protocol.",
        "versions": versions(),
        "machine": {"host": platform.node(), "cpu": cpu_model(), "device_name": device_name,
                    "ranks": dist.world, "backend": dist.backend or None,
                    "load_avg_at_start": run_info["load_start"]},
        "started": datetime.fromtimestamp(run_info["started"], timezone.utc).isoformat(
            timespec="seconds"),
        "wall_s": round(time.time() - run_info["started"], 1),
        "resumed_samples": run_info["resumed"],
        "splits": per_split,
    }
    write_json(out_dir / "summary.json", summary)
    (out_dir / "table.md").write_text(markdown_table(summary), encoding="utf-8")
    return summary


def _policy() -> str:
    from stamp_ros.eval.report import BAD_SAMPLE_POLICY

    return BAD_SAMPLE_POLICY


def _device_name(devices: list[str]) -> str:
    import torch

    names = []
    for dev in devices:
        if dev.startswith("cuda") and torch.cuda.is_available():
            names.append(torch.cuda.get_device_name(torch.device(dev)))
        else:
            from stamp_ros.bench.machine import cpu_model

            names.append(cpu_model())
    return ", ".join(sorted(set(names)))


def _cmd_compare(args: argparse.Namespace) -> int:
    from stamp_ros.eval.compare import compare_runs, format_comparison

    result = compare_runs(args.compare[0], args.compare[1], variant=args.compare_mask,
                          threshold=args.flip_threshold, top=args.top)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_comparison(result, top=args.top))
    return EXIT_OK
