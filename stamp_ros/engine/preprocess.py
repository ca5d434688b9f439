"""Image array -> Qwen2-VL ``pixel_values`` and ``image_grid_thw``.

transformers 5.24 cannot build ``Qwen2VLProcessor`` without torchvision, so the engine does its
own preprocessing. Two implementations exist:

* :func:`preprocess_pil` reproduces ``Qwen2VLImageProcessorPil`` step by step (PIL bicubic on
  uint8, float64 rescale cast to float32, float32 CLIP normalisation, merge-window patch order);
  the tests check it against the transformers class. It is the default on CPU.
* :func:`preprocess_torch` does the same maths with torch on the model's device, which avoids a
  host round trip of the resized image on a GPU. torch's antialiased bicubic is not bit-identical
  to PIL's (different fixed-point rounding and kernel edge handling): on natural images a few
  percent of the resized uint8 values differ, by 1-2 grey levels, i.e. up to ~0.03 after CLIP
  normalisation (the test suite measures and bounds it). Use it when speed matters more than
  bit-exactness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from stamp_ros.engine.defaults import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from stamp_ros.engine.errors import InputError

# OpenAI CLIP statistics, as used by every Qwen2-VL checkpoint.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionGeometry:
    """The patch layout of the vision tower; read from the checkpoint so odd configs still work."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size


@dataclass
class Preprocessed:
    """Model-ready image tensors plus the sizes the mask stage needs."""

    pixel_values: torch.Tensor
    """(grid_h*grid_w, 3*temporal*patch*patch) float32, merge-window order."""
    grid_thw: torch.Tensor
    """(1, 3) int64: [1, grid_h, grid_w] in 14-px patches (before merging)."""
    resized_hw: tuple[int, int]
    merge_size: int = 2

    @property
    def merged_hw(self) -> tuple[int, int]:
        """(h_grid, w_grid) of the mask: one cell per merged 2x2 window."""
        _, gh, gw = (int(v) for v in self.grid_thw[0])
        return gh // self.merge_size, gw // self.merge_size

    @property
    def num_tokens(self) -> int:
        h, w = self.merged_hw
        return h * w


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """Target size with both sides multiples of ``factor`` and the area within the bounds.

    Same arithmetic as Qwen2-VL (round, then floor-shrink above max, ceil-grow below min, so the
    result may slightly exceed ``max_pixels`` for tiny inputs): the grid and hence the number of
    mask tokens must match the checkpoint's training distribution.
    """
    if min(height, width) <= 0:
        raise InputError(f"image has zero size ({width}x{height})")
    if max(height, width) / min(height, width) > 200:
        raise InputError(
            f"aspect ratio must be below 200, got {max(height, width) / min(height, width):.1f}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def validate_image(image: object) -> np.ndarray:
    """Reject anything that is not an HxWx3 uint8 array before it reaches PIL or torch."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image has zero size {image.shape}")
    return image


def _patchify(chw: np.ndarray | torch.Tensor, geo: VisionGeometry):
    """(C, H, W) -> (grid_h*grid_w, patch_dim) with each 2x2 merge window contiguous.

    Works on numpy and torch alike (reshape/transpose/broadcast only). The image is repeated
    ``temporal_patch_size`` times because Qwen2-VL treats a still image as a 2-frame clip.
    """
    c, h, w = chw.shape
    p, m, t = geo.patch_size, geo.merge_size, geo.temporal_patch_size
    gh, gw = h // p, w // p
    x = chw.reshape(c, gh // m, m, p, gw // m, m, p)
    perm = (1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, p, p)
    if isinstance(x, np.ndarray):
        x = np.transpose(x, perm)
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p))
        return np.ascontiguousarray(x).reshape(gh * gw, c * t * p * p), gh, gw
    x = x.permute(*perm)
    x = x[:, :, :, :, :, None].expand(*x.shape[:5], t, p, p)
    return x.reshape(gh * gw, c * t * p * p), gh, gw


def preprocess_pil(
    image: np.ndarray,
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    geometry: VisionGeometry | None = None,
) -> Preprocessed:
    """CPU path, numerically equal to transformers' ``Qwen2VLImageProcessorPil``."""
    geo = geometry or VisionGeometry()
    image = validate_image(image)
    h, w = image.shape[:2]
    rh, rw = smart_resize(h, w, geo.factor, min_pixels, max_pixels)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), resample=Image.BICUBIC))
    # Same dtype sequence as transformers: float64 * (1/255) -> float32, then float32 normalise.
    x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    patches, gh, gw = _patchify(np.transpose(x, (2, 0, 1)), geo)
    return Preprocessed(
        pixel_values=torch.from_numpy(patches),
        grid_thw=torch.tensor([[1, gh, gw]], dtype=torch.long),
        resized_hw=(rh, rw),
        merge_size=geo.merge_size,
    )


def preprocess_torch(
    image: np.ndarray | torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    geometry: VisionGeometry | None = None,
) -> Preprocessed:
    """Device path: antialiased bicubic in torch, quantised back to uint8 like PIL would."""
    geo = geometry or VisionGeometry()
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(validate_image(image))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
        raise InputError(f"image must be an HxWx3 uint8 tensor, got {tuple(image.shape)}")
    h, w = int(image.shape[0]), int(image.shape[1])
    rh, rw = smart_resize(h, w, geo.factor, min_pixels, max_pixels)
    x = image.to(device).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(
        x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True
    )
    # PIL hands back uint8; rounding here keeps the two paths within one grey level.
    x = x.round_().clamp_(0, 255)[0] / 255.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(3, 1, 1)
    patches, gh, gw = _patchify((x - mean) / std, geo)
    return Preprocessed(
        pixel_values=patches,
        grid_thw=torch.tensor([[1, gh, gw]], dtype=torch.long, device=x.device),
        resized_hw=(rh, rw),
        merge_size=geo.merge_size,
    )
