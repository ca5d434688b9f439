"""The ``stamp-ros bench`` arguments, the dispatch to the two measurements, and the JSON output.

Only argparse is imported at module level: the CLI registers every subcommand at start-up, and
``stamp-ros --help`` must not pay for torch or the ROS messages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the ``stamp-ros`` parser."""
    p = sub.add_parser(
        "bench",
        help="time the fast and reference engine paths (random weights), or with "
        "--node-overhead the node's per-frame CPU work; prints JSON",
    )
    p.add_argument(
        "--node-overhead", action="store_true",
        help="measure the node's own per-frame work (conversion, messages, overlay) instead "
        "of the engine; needs the ROS 2 messages",
    )
    p.add_argument("--shape", default=None, help="'mid' (default), 'tiny' or a shape JSON file")
    p.add_argument("--image", help="image file; default a synthetic --size image")
    p.add_argument(
        "--size", default=None,
        help="synthetic image WxH (default 640x480; 1920x1080 with --node-overhead)",
    )
    p.add_argument("--segs", default="1,3", help="comma list of <|seg|> counts to run (1 and/or 3)")
    p.add_argument(
        "--repeats", type=int, default=None,
        help="timed runs per path (default 3); per stage with --node-overhead (default 50)",
    )
    p.add_argument("--frames", type=int, default=None, help="continuous-mode frames (default 3)")
    p.add_argument(
        "--soak",
        type=int,
        default=None,
        help="consecutive requests for the memory-growth check (default 1000 on CUDA, 5 on CPU)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument(
        "--attn", default="auto", choices=["auto", "sdpa", "eager", "flash_attention_2"]
    )
    p.add_argument(
        "--decode-mode",
        default="eager",
        choices=["eager", "static", "cuda_graph"],
        help="decode loop of the fast path (see engine.decode)",
    )
    p.add_argument(
        "--soak-max-s", type=float, default=None, help="stop the soak after this many seconds"
    )
    p.add_argument(
        "--checkpoint-dtype", default="fp32", choices=["fp32", "bf16"],
        help="dtype of the generated random checkpoints (bf16 halves build time for big shapes)",
    )
    p.add_argument(
        "--no-calibrate", action="store_true",
        help="skip centring the random classifier bias (saves a CPU model load; same timings)",
    )
    p.add_argument("--min-pixels", type=int, default=None, help="default: the engine's")
    p.add_argument("--max-pixels", type=int, default=None, help="default: the engine's")
    p.add_argument(
        "--check-fields", action=argparse.BooleanOptionalAction, default=True,
        help="--node-overhead: build messages with ROS_PYTHON_CHECK_FIELDS=1, as Humble "
        "always does (default on)",
    )
    p.add_argument("--quick", action="store_true", help="CI smoke run: tiny shape, 1 repeat")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--work-dir", help="where to write the random checkpoints (default: temp)")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the chosen measurement and print its report (one JSON object) on stdout."""
    if args.node_overhead:
        from stamp_ros.bench.node_overhead import run_node_overhead

        report = run_node_overhead(args)
    else:
        from stamp_ros.bench.engine_bench import run_engine_bench

        report = run_engine_bench(args)
    write_report(report, args.out)
    return 0


def write_report(report: dict, out: str | None) -> None:
    """The report on stdout (the only thing there) and, with ``--out``, in that file."""
    text = json.dumps(report, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    sys.stdout.write(text + "\n")
