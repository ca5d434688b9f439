"""What the model is asked for each sample, and the settings of the paper's runs.

* ``sentence`` (default): the referring sentence (or the label's query) is the query, as is.
  Deterministic, and what a robot's planner sends.
* ``template``: the sentence wrapped in one of the question templates STAMP was trained with
  (``QUESTION_PARTIAL`` of the official data code), as the official evaluation does. The official
  script draws the template with an unseeded ``random.choice`` in each data-loader worker, so its
  numbers change from run to run; here the choice is a function of ``--seed`` and the sample's
  key alone, so it is the same on every run, every rank and after a resume.
"""

from __future__ import annotations

import random

__all__ = ["PAPER", "PROMPT_MODES", "TEMPLATES", "build_prompt"]

PROMPT_MODES = ("sentence", "template")

TEMPLATES = (
    "Please segment only the [class_name] in the image.",
    "Can you segment the [class_name] in the image?",
    "Where is the [class_name] in this picture? Please respond with segmentation mask.",
    "Where is '[class_name]' in this image? Please output segmentation mask.",
    "Could you provide the segmentation mask for '[class_name]' in this image?",
    "Please segment the image and highlight '[class_name]'.",
)
"""The training/evaluation question templates; ``[class_name]`` is the referring sentence."""

PAPER = {
    "min_pixels": 1024 * 28 * 28,
    "max_pixels": 1024 * 28 * 28,
    "max_new_tokens": 1024,
    "prompt": "template",
}
"""What ``--paper`` sets: the official evaluation's fixed 1024-token pixel budget
(min = max = 802,816 pixels), its answer limit, and template questions."""


def template_index(seed: int, key: str) -> int:
    """The template a sample gets: a seeded generator per (seed, sample key)."""
    return random.Random(f"{seed}|{key}").randrange(len(TEMPLATES))


def build_prompt(text: str, mode: str, seed: int, key: str) -> str:
    """The query sent to the engine for a sample with this text and key."""
    if mode == "sentence":
        return text
    if mode == "template":
        return TEMPLATES[template_index(seed, key)].replace("[class_name]", text)
    raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
