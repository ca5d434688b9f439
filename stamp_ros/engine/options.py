"""What the ``stamp-ros`` subcommands share: model options, the segmenter built from them, images.

A module of its own so every command module (``cli``, ``bench``, ``demo``) depends on it and it
on none of them: the imports run one way, from the commands down to the engine.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from stamp_ros.engine.defaults import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    DEFAULT_MODEL,
)
from stamp_ros.engine.errors import InputError

__all__ = ["add_model_options", "read_image", "segmenter_from_args"]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model/engine options every inference command shares (segment, demo, ...)."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="local dir or hub id")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument(
        "--attn",
        default="sdpa",
        choices=["sdpa", "eager", "flash_attention_2"],
        help="attention implementation",
    )
    parser.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--mask-upsample", default="nearest", choices=["nearest", "bilinear"])
    parser.add_argument(
        "--refine",
        default="none",
        choices=["none", "sam"],
        help="mask refinement: sam (needs the segment-anything package and --sam-checkpoint)",
    )
    parser.add_argument(
        "--sam-checkpoint", default="", help="SAM .pth state dict (ViT-B/L/H) for --refine sam"
    )


def segmenter_from_args(args: argparse.Namespace):
    """A :class:`StampSegmenter` for the options of :func:`add_model_options` (loads torch)."""
    from stamp_ros.engine.segmenter import StampSegmenter

    return StampSegmenter.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        max_new_tokens=args.max_new_tokens,
        mask_upsample=args.mask_upsample,
        refine=None if args.refine == "none" else args.refine,
        sam_checkpoint=args.sam_checkpoint or None,
    )


def read_image(path: str) -> np.ndarray:
    """An HxWx3 uint8 RGB array, or InputError for anything PIL cannot read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot read image {path!r}: {exc}") from exc


# Argument types of the commands' numeric options: a bad value is a usage error that names it.
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value
