"""The ``stamp-ros`` command line (also ``python -m stamp_ros.cli``).

Subcommands are added by small registrar functions listed in :data:`SUBCOMMANDS`; each one adds
its parser and sets ``handler`` (``args -> exit code``). To add a command (``demo``, ...), write
``register_<name>(subparsers)`` in your own module and append it to ``SUBCOMMANDS`` below.

Exit codes: 0 success, 1 engine failure, 2 bad input or usage, 3 unusable checkpoint,
130 interrupted. Errors are one line on stderr; logs go to stderr; ``--json`` output is the only
thing on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from stamp_ros.engine.errors import CheckpointError, EngineError, InputError
from stamp_ros.engine.options import add_model_options, read_image, segmenter_from_args

logger = logging.getLogger("stamp_ros.cli")

Registrar = Callable[["argparse._SubParsersAction"], None]

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CHECKPOINT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


# --------------------------------------------------------------------------- segment


def register_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment one image offline (no ROS)")
    add_model_options(p)
    p.add_argument("--image", required=True, help="image file (any format PIL reads)")
    p.add_argument("--query", required=True, help="the request, e.g. 'Please segment the cup.'")
    p.add_argument("--out-dir", help="write mask_<k>.png (0/255) files here")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=cmd_segment)


def result_to_json(result, mask_paths: list[str | None]) -> dict:
    """The ``--json`` schema; kept as a function so other front ends can emit the same thing."""
    return {
        "text": result.text,
        "instances": [
            {
                "grid": inst.grid.astype(int).tolist(),
                "bbox": [int(v) for v in inst.bbox],
                "area": int(inst.area),
                "score": float(inst.score),
                "mask_png": path,
            }
            for inst, path in zip(result.instances, mask_paths, strict=True)
        ],
        "image_size": [int(v) for v in result.image_size],
        "timings_ms": {k: float(v) for k, v in result.timings_ms.items()},
    }


def write_masks(result, out_dir: str | None) -> list[str | None]:
    if not out_dir:
        return [None] * len(result.instances)
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, inst in enumerate(result.instances):
        path = out / f"mask_{k}.png"
        Image.fromarray((inst.mask > 0).astype("uint8") * 255, mode="L").save(path)
        paths.append(str(path))
    return paths


def cmd_segment(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise InputError("query is empty")
    image = read_image(args.image)
    segmenter = segmenter_from_args(args)
    result = segmenter.segment(image, args.query)
    paths = write_masks(result, args.out_dir)
    if args.json:
        print(json.dumps(result_to_json(result, paths)))
    else:
        print(f"answer: {result.text}")
        for k, inst in enumerate(result.instances):
            where = f" -> {paths[k]}" if paths[k] else ""
            print(f"mask {k}: bbox={inst.bbox} area={inst.area} score={inst.score:.3f}{where}")
        print("timings (ms): " + ", ".join(f"{k}={v:.1f}" for k, v in result.timings_ms.items()))
    return EXIT_OK


# --------------------------------------------------------------------------- make-test-checkpoint


def register_make_test_checkpoint(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.testing.checkpoint import DEFAULT_ANSWER

    p = sub.add_parser("make-test-checkpoint", help="write a tiny random STAMP checkpoint")
    p.add_argument("dir", help="output directory (replaced if it exists)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--answer",
        default=DEFAULT_ANSWER,
        help="text greedy decoding will always produce (use <|seg|> for masks)",
    )
    p.add_argument("--no-answer", action="store_true", help="leave the random weights unscripted")
    p.set_defaults(handler=cmd_make_test_checkpoint)


def cmd_make_test_checkpoint(args: argparse.Namespace) -> int:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    try:
        path = make_test_checkpoint(
            args.dir, seed=args.seed, answer=None if args.no_answer else args.answer
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    print(path)
    return EXIT_OK


# --------------------------------------------------------------------------- registry


def register_bench(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.bench import register

    register(sub)


def register_demo(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.cli.demo import register

    register(sub)


def register_bag(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.bag.command import register

    register(sub)


def register_eval(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.eval import register

    register(sub)


def register_doctor(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.cli.doctor import register

    register(sub)


SUBCOMMANDS: list[Registrar] = [
    register_segment,
    register_make_test_checkpoint,
    register_bench,
    register_demo,
    register_bag,
    register_eval,
    register_doctor,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stamp-ros", description="STAMP segmentation tools")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.handler(args))
    except InputError as exc:
        code, msg = EXIT_INPUT, str(exc)
    except CheckpointError as exc:
        code, msg = EXIT_CHECKPOINT, str(exc)
    except EngineError as exc:
        code, msg = EXIT_FAILED, str(exc)
    except KeyboardInterrupt:
        code, msg = EXIT_INTERRUPTED, "interrupted"
    print(f"stamp-ros: error: {' '.join(msg.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
