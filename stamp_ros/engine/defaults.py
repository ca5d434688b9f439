"""The engine's defaults, in a module without torch so light front ends can share them.

The node's parameter table (``stamp_ros.pipeline.params``), the CLI's options and the demo read
these values without loading torch and transformers; the engine modules that use them
(``checkpoint``, ``preprocess``, ``segmenter``) import them from here. One definition each, so
the documented defaults cannot drift from what the engine does.
"""

from __future__ import annotations

DEFAULT_MODEL = "JiaZL/STAMP-2B-uni"
"""The checkpoint loaded when none is named: STAMP-2B unified (a full model, not an adapter)."""

# The Qwen2-VL processor's resize range: the image area is scaled into [min, max] pixels, in
# units of 28x28 (one merged 2x2 block of 14-pixel patches = one image token).
DEFAULT_MIN_PIXELS = 1024 * 28 * 28
DEFAULT_MAX_PIXELS = 1280 * 28 * 28

DEFAULT_MAX_NEW_TOKENS = 128
"""Longest answer decoded; STAMP answers are ~20 tokens, so this only bounds runaway output."""
