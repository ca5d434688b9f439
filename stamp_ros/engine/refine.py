"""Optional SAM refinement of STAMP's coarse masks (spec §5), off by default.

Follows the reference recipe: the coarse full-resolution mask becomes SAM's dense mask prompt
(long side resized to 256 with bilinear filtering, mapped to +/-6.9 logits), 10 positive and
10 negative points are sampled from it, and SAM's decoder runs three times, each pass fed the
previous low-resolution logits. Deliberate differences from the reference code: the point
sampler is seeded (results are reproducible), and the 256x256 prompt is padded with background,
not with the wrapped-around ``-1 -> 255`` foreground of the reference's uint8 padding quirk.

Only the model classes of the ``segment-anything`` package are used (``segment_anything.modeling``,
plain torch): its package ``__init__``, predictor and image transforms import torchvision, which
this refiner does not need. :class:`SamRefiner` does the predictor's few steps itself (resize the
long side to the encoder's size with PIL's bilinear filter, as torchvision does for PIL images;
normalise and pad; encode once per image; prompt and decode per mask). The architecture is read
off the checkpoint's tensors (ViT-B/L/H and any smaller encoder), and the checkpoint is a plain
state dict loaded with ``torch.load(weights_only=True)``: a pickle that carries code is refused.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from stamp_ros.engine.errors import CheckpointError, EngineError

logger = logging.getLogger("stamp_ros.engine")

REFINERS = ("sam",)
SAM_DECODER_HEADS = 8
"""SAM's mask decoder attention heads: not visible in the weights; 8 in every released SAM."""
_POINTS = 10
_PASSES = 3
_EPS = 1e-3
_MODELING = "_stamp_ros_sam_modeling"


def sam_modeling() -> types.ModuleType:
    """``segment_anything.modeling`` (Sam, ImageEncoderViT, ...) without the package ``__init__``.

    Importing ``segment_anything`` itself pulls in torchvision (its automatic mask generator and
    image transforms); the model classes are plain torch, so they are loaded from the package's
    ``modeling`` folder under a private name. EngineError when the package is not installed.
    """
    module = sys.modules.get(_MODELING)
    if module is not None:
        return module
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "refine='sam' needs the 'segment-anything' package (pip install segment-anything, "
            "or pip install 'stamp-ros[sam]') and a SAM checkpoint"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "modeling"
    mod_spec = importlib.util.spec_from_file_location(
        _MODELING, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[_MODELING] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception:
        del sys.modules[_MODELING]
        raise
    return module


def _count(state: dict, prefix: str) -> int:
    """How many numbered submodules ``prefix<i>.`` the state dict has (ValueError: none)."""
    return 1 + max(int(k[len(prefix) :].split(".", 1)[0]) for k in state if k.startswith(prefix))


def build_sam(state: dict):
    """An (untrained) ``Sam`` whose shapes match ``state``, a SAM state dict.

    Encoder width, depth, patch and image size, window size, global-attention blocks and head
    count (from the relative-position tables), neck, prompt encoder and decoder sizes are read
    from the tensors; the decoder's head count is :data:`SAM_DECODER_HEADS`.
    """
    import torch

    m = sam_modeling()
    enc = "image_encoder."
    try:
        embed_dim, _, patch, _ = state[enc + "patch_embed.proj.weight"].shape
        depth = _count(state, enc + "blocks.")
        prompt_dim = state[enc + "neck.0.weight"].shape[0]
        mlp_hidden = state[enc + "blocks.0.mlp.lin1.weight"].shape[0]
        mask_in_chans = state["prompt_encoder.mask_downscaling.3.weight"].shape[0]
        dec = "mask_decoder."
        dec_depth = _count(state, dec + "transformer.layers.")
        dec_mlp = state[dec + "transformer.layers.0.mlp.lin1.weight"].shape[0]
        multimask = state[dec + "mask_tokens.weight"].shape[0] - 1
        iou_depth = _count(state, dec + "iou_prediction_head.layers.")
        iou_hidden = state[dec + "iou_prediction_head.layers.0.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"not a SAM checkpoint (missing or odd tensor: {exc})") from exc
    abs_pos = enc + "pos_embed" in state
    grid = state[enc + "pos_embed"].shape[1] if abs_pos else None
    rel = [state.get(f"{enc}blocks.{i}.attn.rel_pos_h") for i in range(depth)]
    use_rel = all(r is not None for r in rel)
    if grid is None:
        if not use_rel:
            raise CheckpointError("SAM checkpoint without pos_embed or relative positions")
        grid = (max(r.shape[0] for r in rel) + 1) // 2
    head_dim = rel[0].shape[1] if use_rel else 64
    sizes = [(r.shape[0] + 1) // 2 for r in rel] if use_rel else [grid] * depth
    window = min(sizes)
    global_blocks = tuple(i for i, s in enumerate(sizes) if s == grid and window != grid)
    img_size = grid * patch
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=img_size,
            mlp_ratio=mlp_hidden / embed_dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=max(1, embed_dim // head_dim),
            patch_size=patch,
            qkv_bias=enc + "blocks.0.attn.qkv.bias" in state,
            use_abs_pos=abs_pos,
            use_rel_pos=use_rel,
            global_attn_indexes=global_blocks,
            window_size=0 if window == grid else window,
            out_chans=prompt_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=multimask,
            transformer=m.TwoWayTransformer(
                depth=dec_depth,
                embedding_dim=prompt_dim,
                mlp_dim=dec_mlp,
                num_heads=SAM_DECODER_HEADS,
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=iou_depth,
            iou_head_hidden_dim=iou_hidden,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam


def load_sam(checkpoint: str | Path, device="cpu"):
    """A ``Sam`` in eval mode with the weights of a SAM ``.pth`` state dict.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain containers
    only; a pickle that would import or call anything else is refused (CheckpointError).
    """
    import torch

    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, OSError: one clear message
        raise CheckpointError(
            f"cannot load SAM checkpoint {str(checkpoint)!r} as plain weights "
            f"(torch.load weights_only=True refused or failed): {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"SAM checkpoint {str(checkpoint)!r} is not a state dict of tensors")
    sam = build_sam(state)
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"SAM checkpoint {str(checkpoint)!r} does not fit: {exc}") from exc
    return sam.to(device=device, dtype=torch.float32).eval()


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
    """SAM on STAMP's coarse masks; built only when refinement is requested."""

    def __init__(self, sam, seed: int = 0):
        self.sam = sam
        self.seed = seed

    @classmethod
    def create(cls, kind: str, checkpoint: str | None, *, device="cpu") -> SamRefiner:
        if kind not in REFINERS:
            raise EngineError(f"unknown refiner {kind!r}; expected one of {REFINERS}")
        sam_modeling()  # the clear "install segment-anything" error comes first
        if not checkpoint or not Path(checkpoint).is_file():
            raise CheckpointError(f"refine='sam' needs a SAM checkpoint file, got {checkpoint!r}")
        return cls(load_sam(checkpoint, device))

    def refine(self, image: np.ndarray, masks: list[np.ndarray]) -> list[np.ndarray]:
        """Refined copies of ``masks``; a mask SAM fails on is returned unrefined (logged)."""
        if not masks:
            return []
        import torch

        with torch.inference_mode():
            features, input_hw = self._encode(image)
            rng = np.random.default_rng(self.seed)
            out = []
            for mask in masks:
                if not mask.any():
                    out.append(mask)
                    continue
                try:
                    out.append(self._refine_one(features, input_hw, mask, rng))
                except Exception as exc:  # SAM failing must not lose the coarse result
                    logger.warning("SAM refinement failed (%s); keeping the coarse mask", exc)
                    out.append(mask)
        return out

    def _encode(self, image: np.ndarray):
        """Image embedding of ``image`` and the (h, w) it was resized to before padding."""
        import torch

        size = self.sam.image_encoder.img_size
        h, w = image.shape[:2]
        scale = size / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        resized = np.array(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
        x = torch.as_tensor(resized, device=self.sam.device).permute(2, 0, 1).contiguous()[None]
        return self.sam.image_encoder(self.sam.preprocess(x)), (nh, nw)

    def _refine_one(self, features, input_hw, mask: np.ndarray, rng) -> np.ndarray:
        import torch

        device = self.sam.device
        h, w = mask.shape
        coords, labels = sample_points(mask, rng)
        coords = coords * np.array([input_hw[1] / w, input_hw[0] / h])
        points = (
            torch.as_tensor(coords, dtype=torch.float, device=device)[None],
            torch.as_tensor(labels, dtype=torch.int, device=device)[None],
        )
        prompt = torch.as_tensor(mask_prompt_logits(mask), device=device)[None]
        dense_pe = self.sam.prompt_encoder.get_dense_pe()
        for _ in range(_PASSES):
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=None, masks=prompt)
            prompt, _ = self.sam.mask_decoder(
                image_embeddings=features,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        full = self.sam.postprocess_masks(prompt, input_hw, (h, w))
        return (full[0, 0] > self.sam.mask_threshold).cpu().numpy().astype(np.uint8)
