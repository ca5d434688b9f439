"""Preprocessing against transformers' Qwen2VLImageProcessorPil, and the mask helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from stamp_ros.engine import masks
from stamp_ros.engine.errors import InputError
from stamp_ros.engine.preprocess import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    preprocess_pil,
    preprocess_torch,
    smart_resize,
)
from stamp_ros.render.overlay import union_mask
from stamp_ros.testing.images import sample_image

CASES = [
    ((480, 640), DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),
    ((427, 640), DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),
    ((137, 301), 56 * 56, 224 * 224),
    ((300, 100), 56 * 56, 112 * 112),
    ((20, 20), 28 * 28, 28 * 28),
]


@pytest.mark.parametrize(("hw", "min_px", "max_px"), CASES)
def test_pil_path_equals_transformers(hw, min_px, max_px):
    image = sample_image(1, *hw)
    ours = preprocess_pil(image, min_pixels=min_px, max_pixels=max_px)
    hf = Qwen2VLImageProcessorPil(min_pixels=min_px, max_pixels=max_px)(
        images=[image], return_tensors="np"
    )
    assert ours.grid_thw.tolist() == hf["image_grid_thw"].tolist()
    assert ours.pixel_values.shape == hf["pixel_values"].shape
    assert ours.pixel_values.shape[1] == 1176
    np.testing.assert_allclose(ours.pixel_values.numpy(), hf["pixel_values"], atol=1e-5, rtol=0)


def test_spec_worked_examples():
    # stamp-inference.md §3: 640x480 -> 28x37 merged grid (N=1036); 1920x1080 at min=max=1024*784.
    assert preprocess_pil(np.zeros((480, 640, 3), np.uint8)).merged_hw == (28, 37)
    assert smart_resize(1080, 1920, 28, 1024 * 784, 1024 * 784) == (24 * 28, 42 * 28)
    assert smart_resize(427, 640) == (27 * 28, 40 * 28)


@pytest.mark.parametrize(("hw", "min_px", "max_px"), CASES)
def test_torch_path_is_close_to_pil(hw, min_px, max_px):
    image = sample_image(2, *hw)
    a = preprocess_pil(image, min_pixels=min_px, max_pixels=max_px)
    b = preprocess_torch(image, min_pixels=min_px, max_pixels=max_px)
    assert a.grid_thw.tolist() == b.grid_thw.tolist()
    diff = (a.pixel_values - b.pixel_values).abs()
    # torch's antialiased bicubic differs from PIL's by a few grey levels at most (1 level is
    # ~0.015 after CLIP normalisation); most values are identical.
    assert diff.max() < 0.15
    assert diff.mean() < 0.01


def test_preprocess_rejects_bad_input():
    with pytest.raises(InputError):
        preprocess_pil(np.zeros((5, 5), np.uint8))
    with pytest.raises(InputError):
        smart_resize(1, 500)


@pytest.mark.parametrize("in_hw", [(28, 37), (1, 1), (5, 7), (32, 32), (17, 3)])
@pytest.mark.parametrize(
    "out_hw", [(480, 640), (427, 640), (37, 28), (64, 64), (1, 3), (999, 1001)]
)
def test_nearest_matches_torch_legacy_nearest(in_hw, out_hw):
    rng = np.random.default_rng(0)
    grid = (rng.random(in_hw) > 0.5).astype(np.uint8)
    expected = (
        torch.nn.functional.interpolate(
            torch.from_numpy(grid)[None, None].double(), size=out_hw, mode="nearest"
        )[0, 0]
        .numpy()
        .astype(np.uint8)
    )
    assert np.array_equal(masks.upsample_nearest(grid, out_hw), expected)
    assert torch.equal(
        masks.upsample_nearest(torch.from_numpy(grid), out_hw), torch.from_numpy(expected)
    )


def test_bilinear_logits_mode():
    logits = np.array([[-1.0, 1.0], [1.0, 3.0]], np.float32)
    out = masks.logits_to_mask(logits, (4, 4), "bilinear")
    assert out.dtype == np.uint8 and out.shape == (4, 4)
    assert out[0, 0] == 0 and out[3, 3] == 1
    nearest = masks.logits_to_mask(logits, (4, 4), "nearest")
    assert nearest.sum() == 12
    with pytest.raises(ValueError):
        masks.logits_to_mask(logits, (4, 4), "cubic")


def test_bbox_area_score_union():
    m = np.zeros((5, 6), np.uint8)
    assert masks.mask_bbox(m) == (0, 0, -1, -1)
    m[1:3, 2:5] = 1
    assert masks.mask_bbox(m) == (2, 1, 4, 2)
    assert masks.mask_area(m) == 6
    logits = np.array([[2.0, -1.0], [0.0, 4.0]])
    expected = (1 / (1 + np.exp(-2)) + 1 / (1 + np.exp(-4))) / 2
    assert masks.grid_score(logits) == pytest.approx(expected)
    assert masks.grid_score(np.full((2, 2), -1.0)) == 0.0
    other = np.zeros_like(m)
    other[4, 5] = 1
    u = union_mask([m, other], m.shape)  # one union for every front end: 0/255 mono8
    assert u.dtype == np.uint8 and (u > 0).sum() == 7
    assert union_mask([], (2, 3)).shape == (2, 3)
