"""Optional SAM refinement of STAMP's coarse masks (spec §5), off by default.

Follows the reference recipe: the coarse full-resolution mask becomes SAM's dense mask prompt
(long side resized to 256 with bilinear filtering, mapped to +/-6.9 logits), 10 positive and
10 negative points are sampled from it, and SAM's decoder runs three times, each pass fed the
previous low-resolution logits. Deliberate differences from the reference code: the point
sampler is seeded (results are reproducible), and the 256x256 prompt is padded with background,
not with the wrapped-around ``-1 -> 255`` foreground of the reference's uint8 padding quirk.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from stamp_ros.engine.errors import EngineError

logger = logging.getLogger("stamp_ros.engine")

REFINERS = ("sam",)
_POINTS = 10
_PASSES = 3
_EPS = 1e-3


def mask_prompt_logits(mask: np.ndarray, size: int = 256) -> np.ndarray:
    """(H, W) {0,1} mask -> (1, size, size) float32 logits for SAM's ``mask_input``."""
    h, w = mask.shape
    scale = size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    small = Image.fromarray((mask > 0).astype(np.uint8) * 255).resize((nw, nh), Image.BILINEAR)
    prob = np.zeros((size, size), np.float32)
    prob[:nh, :nw] = np.asarray(small, np.float32) / 255.0
    prob = np.clip(prob, _EPS, 1 - _EPS)
    return np.log(prob / (1 - prob))[None].astype(np.float32)


def sample_points(mask: np.ndarray, rng: np.random.Generator, k: int = _POINTS):
    """k foreground and k background pixels as (x, y) coordinates plus SAM labels (1, then 0)."""
    coords, labels = [], []
    for value, label in ((True, 1), (False, 0)):
        ys, xs = np.nonzero((mask > 0) == value)
        take = rng.choice(len(ys), size=min(k, len(ys)), replace=False) if len(ys) else []
        coords.extend((float(xs[i]), float(ys[i])) for i in take)
        labels.extend([label] * len(take))
    return np.asarray(coords, np.float64).reshape(-1, 2), np.asarray(labels, np.int64)


class SamRefiner:
    """Wraps ``segment_anything``'s SamPredictor; built only when refinement is requested."""

    def __init__(self, predictor, seed: int = 0):
        self.predictor = predictor
        self.seed = seed

    @classmethod
    def create(cls, kind: str, checkpoint: str | None, *, device="cpu", model_type: str = "vit_h"):
        if kind not in REFINERS:
            raise EngineError(f"unknown refiner {kind!r}; expected one of {REFINERS}")
        if importlib.util.find_spec("segment_anything") is None:
            raise EngineError(
                "refine='sam' needs the 'segment_anything' package (pip install "
                "git+https://github.com/facebookresearch/segment-anything) and a SAM checkpoint"
            )
        if not checkpoint or not Path(checkpoint).is_file():
            raise EngineError(f"refine='sam' needs a SAM checkpoint file, got {checkpoint!r}")
        import torch
        from segment_anything import SamPredictor, sam_model_registry

        sam = sam_model_registry[model_type](checkpoint=None)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
        sam.to(device=device, dtype=torch.float32).eval()
        return cls(SamPredictor(sam))

    def refine(self, image: np.ndarray, masks: list[np.ndarray]) -> list[np.ndarray]:
        """Refined copies of ``masks``; a mask SAM fails on is returned unrefined (logged)."""
        if not masks:
            return []
        self.predictor.set_image(image)
        rng = np.random.default_rng(self.seed)
        out = []
        for mask in masks:
            if not mask.any():
                out.append(mask)
                continue
            try:
                out.append(self._refine_one(mask, rng))
            except Exception as exc:  # SAM failing must not lose the coarse result
                logger.warning("SAM refinement failed (%s); keeping the coarse mask", exc)
                out.append(mask)
        return out

    def _refine_one(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        coords, labels = sample_points(mask, rng)
        prompt = mask_prompt_logits(mask)
        result = None
        for _ in range(_PASSES):
            result, _, low_res = self.predictor.predict(
                point_coords=coords, point_labels=labels, mask_input=prompt, multimask_output=False
            )
            prompt = low_res
        return result[0].astype(np.uint8)
