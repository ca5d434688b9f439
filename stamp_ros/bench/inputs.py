"""What the engine benchmark feeds the model: a model shape, a scripted answer, camera frames.

Real weights are not reachable here, so the model is random with a real architecture (a shape
JSON such as /work/shared/model-shapes/stamp-2b.json, the built-in mid-size CPU shape, or the
tiny test shape). Its answer is scripted (see :mod:`stamp_ros.testing.checkpoint`) so every path
decodes the same ~20 tokens and emits 1 or 3 ``<|seg|>``; runs are comparable across machines
and commits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stamp_ros.engine.options import read_image
from stamp_ros.testing.checkpoint import TinyShape
from stamp_ros.testing.images import sample_image

MID_SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 151661,
    "vision_config": {"depth": 8, "embed_dim": 512, "num_heads": 8, "mlp_ratio": 4},
}
# Unique words (the scripted answer needs them), ~20 generated tokens like real STAMP answers.
ANSWERS = {
    1: "Sure, here is a segmentation mask for that white horse standing near the wooden fence "
    "on its left side: <|seg|>",
    3: "Sure, here are masks for the three horses you asked me about, first: <|seg|> "
    "second: <|seg|> third: <|seg|>",
}
QUERY = "Please segment the white horse in the image."
SECOND_QUERY = "Where is the brown horse? Please respond with segmentation mask."


def load_shape(spec: str) -> TinyShape:
    """``tiny``, ``mid`` or the path of a shape JSON (a transformers config) as a TinyShape."""
    if spec == "tiny":
        return TinyShape()
    data = MID_SHAPE if spec == "mid" else json.loads(Path(spec).read_text())
    return TinyShape.from_json(data)


def parse_size(size: str) -> tuple[int, int]:
    """``"640x480"`` -> (width, height)."""
    w, h = (int(v) for v in size.lower().split("x"))
    return w, h


def bench_frames(image: str | None, size: str, count: int) -> list[np.ndarray]:
    """``count`` distinct frames of the bench size (a file, or smooth synthetic scenes)."""
    if image:
        base = read_image(image)
        out = []
        for i in range(count):  # distinct content, same picture: a camera with sensor noise
            f = base.copy()
            f[i % f.shape[0], :, 0] ^= 1
            out.append(f)
        return out
    w, h = parse_size(size)
    return [sample_image(100 + i, h, w) for i in range(count)]
