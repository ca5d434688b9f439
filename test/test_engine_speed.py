"""Speed features of the engine must not change results: prefix reuse, static decode, warm-up.

Tiny generated checkpoints, fp32 on the CPU; each test runs in well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stamp_ros.engine.segmenter import StampSegmenter
from stamp_ros.testing.checkpoint import make_test_checkpoint
from stamp_ros.testing.images import sample_image

SMALL = {"min_pixels": 56 * 56, "max_pixels": 168 * 168}
QUERY = "Please segment the white horse in the image."


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from stamp_ros.engine.checkpoint import load_stamp

    ckpt = make_test_checkpoint(
        tmp_path_factory.mktemp("speed") / "multi", answer="A: <|seg|>, B: <|seg|>", seed=5
    )
    return load_stamp(str(ckpt), device="cpu", dtype="fp32")


def assert_identical(a, b):
    """Bit-identical: same text, tokens, logits, grids and masks."""
    assert a.text == b.text
    assert a.token_ids == b.token_ids
    assert len(a.instances) == len(b.instances) > 0
    for x, y in zip(a.instances, b.instances, strict=True):
        assert np.array_equal(x.logits, y.logits)
        assert np.array_equal(x.grid, y.grid)
        assert np.array_equal(x.mask, y.mask)


def test_prefix_reuse_is_identical_to_no_reuse(loaded):
    cached = StampSegmenter(loaded, **SMALL)
    plain = StampSegmenter(loaded, prefix_cache=0, **SMALL)
    image = sample_image(21, 90, 120)
    first = cached.segment(image, QUERY)
    assert len(cached._prefixes) == 1
    # Same content in a different array: recognised by content, prefix reused.
    second = cached.segment(image.copy(), QUERY)
    assert second.timings_ms["vision"] < 0.5  # vision tower skipped
    reference = plain.segment(image, QUERY)
    assert_identical(first, second)
    assert_identical(first, reference)
    # A different question about the same frame reuses it too and matches a cold run.
    other = cached.segment(image, "Where is the dog?")
    assert other.timings_ms["vision"] < 0.5
    assert_identical(other, plain.segment(image, "Where is the dog?"))
    # Fast path with prefix reuse still equals the reference path (within fp tolerance).
    ref = plain.segment(image, QUERY, path="reference")
    for x, y in zip(second.instances, ref.instances, strict=True):
        np.testing.assert_allclose(x.logits, y.logits, atol=1e-4, rtol=0)


def test_prefix_cache_keys(loaded):
    seg = StampSegmenter(loaded, prefix_cache=2, **SMALL)
    a, b = sample_image(1, 90, 120), sample_image(2, 90, 120)
    seg.segment(a, QUERY)
    changed = a.copy()
    changed[45, 60, 1] ^= 1  # one pixel differs: a different frame
    assert seg.segment(changed, QUERY).timings_ms["vision"] > 0.0
    assert len(seg._prefixes) == 2
    seg.segment(b, QUERY)
    assert len(seg._prefixes) == 2  # bounded (LRU)
    # An explicit frame key wins over content (the caller vouches for identity).
    r1 = seg.segment(a, QUERY, frame_key=("cam", 7))
    r2 = seg.segment(a, "Where is the dog?", frame_key=("cam", 7))
    assert r2.timings_ms["vision"] < 0.5
    assert r1.grid_size == r2.grid_size
    # A different history changes the prefix: no reuse.
    r3 = seg.segment(a, QUERY, history=[("hi", "hello")], frame_key=("cam", 7))
    assert r3.timings_ms["vision"] > 0.0
    seg.clear_prefix_cache()
    assert not seg._prefixes


def test_teacher_forced_on_cached_prefix_equals_full(loaded):
    seg = StampSegmenter(loaded, **SMALL)
    image = sample_image(22, 100, 100)
    full = seg.segment(image, QUERY)
    forced = seg.segment(image, QUERY, forced_answer_ids=full.token_ids)
    assert forced.timings_ms["vision"] < 0.5
    # Decoding token by token and prefilling the answer at once differ only by rounding.
    assert forced.token_ids == full.token_ids
    for x, y in zip(full.instances, forced.instances, strict=True):
        np.testing.assert_allclose(x.logits, y.logits, atol=1e-4, rtol=0)
        assert np.array_equal(x.mask, y.mask)


def test_static_decode_matches_eager(loaded):
    eager = StampSegmenter(loaded, prefix_cache=0, **SMALL)
    static = StampSegmenter(loaded, prefix_cache=0, decode_mode="static", **SMALL)
    graph = StampSegmenter(loaded, prefix_cache=0, decode_mode="cuda_graph", **SMALL)
    assert graph.decode_mode == "static"  # no CUDA here: same maths without the graph
    image = sample_image(23, 80, 110)
    a, b = eager.segment(image, QUERY), static.segment(image, QUERY)
    assert a.token_ids == b.token_ids and a.text == b.text
    for x, y in zip(a.instances, b.instances, strict=True):
        np.testing.assert_allclose(x.logits, y.logits, atol=1e-4, rtol=0)
        confident = np.abs(x.logits) > 1e-3
        assert np.array_equal(x.grid[confident], y.grid[confident])
    # The static buffers are reused by the next request and give the same answer again.
    c = static.segment(sample_image(24, 80, 110), QUERY)
    assert c.token_ids == a.token_ids
    assert len(static._decoders) == 1


def test_static_decode_seg_as_last_token(loaded):
    seg = StampSegmenter(loaded, prefix_cache=0, decode_mode="static", **SMALL)
    eager = StampSegmenter(loaded, prefix_cache=0, **SMALL)
    image = sample_image(25, 90, 90)
    full = eager.segment(image, QUERY)
    cut_at = full.token_ids.index(seg.tokens.seg) + 1
    seg.max_new_tokens = eager.max_new_tokens = cut_at
    a, b = seg.segment(image, QUERY), eager.segment(image, QUERY)
    assert a.token_ids[-1] == seg.tokens.seg and a.token_ids == b.token_ids
    np.testing.assert_allclose(a.instances[0].logits, b.instances[0].logits, atol=1e-4)


def test_warmup_runs_and_leaves_no_state(loaded):
    seg = StampSegmenter(loaded, decode_mode="static", **SMALL)
    times = seg.warmup()
    assert set(times) == {"decode_run_ms", "mask_run_ms"}
    assert not seg._prefixes
    result = seg.segment(sample_image(26, 64, 64), QUERY)
    assert len(result.instances) == 2


def test_bad_options(loaded):
    with pytest.raises(ValueError):
        StampSegmenter(loaded, decode_mode="turbo")
    with pytest.raises(ValueError):
        StampSegmenter(loaded, prefix_cache=-1)


def test_auto_dtype_and_attention_on_cpu(loaded):
    from stamp_ros.engine.checkpoint import _resolve_attn, _resolve_dtype

    cpu = torch.device("cpu")
    assert _resolve_dtype("auto", cpu, loaded.config) is torch.float32
    assert _resolve_attn("auto", cpu) == "sdpa"
    assert loaded.attn_implementation == "sdpa"
