"""A tiny random SAM checkpoint, built from segment-anything's own model classes.

Same geometry as the released SAM (1024-pixel input, 16-pixel patches, a 64x64 image embedding,
so the refiner's 256x256 mask prompt fits), windowed and global attention blocks with relative
positions, but a few dozen channels instead of hundreds: about 1 MB, a second per image on a CPU.
The weights are random, so a "refined" mask is an arbitrary function of the image and the
prompt: good for plumbing and shape checks, meaningless as a segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path


@dataclass(frozen=True)
class TinySam:
    embed_dim: int = 32
    depth: int = 2
    num_heads: int = 2
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = ()
    prompt_dim: int = 32
    decoder_depth: int = 2
    decoder_mlp_dim: int = 64
    mask_in_chans: int = 16
    iou_head_hidden_dim: int = 32


def build_tiny_sam(shape: TinySam | None = None, seed: int = 0):
    """A random ``segment_anything`` ``Sam`` of ``shape`` (eval mode, fp32, CPU)."""
    import torch

    from stamp_ros.engine.refine import SAM_DECODER_HEADS, sam_modeling

    s = shape or TinySam()
    m = sam_modeling()
    torch.manual_seed(seed)
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=s.depth,
            embed_dim=s.embed_dim,
            img_size=1024,
            mlp_ratio=2.0,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=s.num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=s.global_attn_indexes,
            window_size=s.window_size,
            out_chans=s.prompt_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=s.prompt_dim,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=s.mask_in_chans,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=s.decoder_depth,
                embedding_dim=s.prompt_dim,
                mlp_dim=s.decoder_mlp_dim,
                num_heads=SAM_DECODER_HEADS,
            ),
            transformer_dim=s.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=s.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    with torch.no_grad():
        # Relative-position tables start at zero in SAM; random ones make them matter.
        for name, param in sam.named_parameters():
            if "rel_pos" in name:
                param.normal_(0.0, 0.5)
    return sam.eval()


def make_test_sam(path: str | Path, shape: TinySam | None = None, seed: int = 0) -> Path:
    """Write a tiny random SAM ``state_dict`` to ``path`` (a ``.pth``, as SAM is released)."""
    import torch

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_tiny_sam(shape, seed).state_dict(), out)
    return out
