"""Engine tests on tiny real Qwen2-VL checkpoints generated on the fly (fp32, CPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from stamp_ros.engine.compat import rope_index
from stamp_ros.engine.errors import InferenceCancelled, InputError
from stamp_ros.engine.maskpass import fast_mask_logits
from stamp_ros.engine.segmenter import StampSegmenter
from stamp_ros.testing.checkpoint import make_test_checkpoint
from stamp_ros.testing.images import sample_image

SMALL = {"min_pixels": 56 * 56, "max_pixels": 224 * 224}
ANSWERS = {
    "one": "Sure, it is here: <|seg|>",
    "multi": "A: <|seg|>, B: <|seg|> and C: <|seg|>",
    "none": "There is nothing to segment.",
}
SHAPES = {"square": (96, 96), "landscape": (90, 170), "portrait": (170, 90)}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_ckpts")
    return {k: make_test_checkpoint(root / k, answer=a, seed=3) for k, a in ANSWERS.items()}


@pytest.fixture(scope="session")
def segmenters(checkpoints):
    return {
        k: StampSegmenter.from_pretrained(str(p), device="cpu", dtype="fp32", **SMALL)
        for k, p in checkpoints.items()
    }


def assert_same(a, b, tol=1e-4):
    assert a.text == b.text
    assert a.token_ids == b.token_ids
    assert len(a.instances) == len(b.instances)
    for x, y in zip(a.instances, b.instances, strict=True):
        np.testing.assert_allclose(x.logits, y.logits, atol=tol, rtol=0)
        confident = np.abs(x.logits) > 10 * tol
        assert np.array_equal(x.grid[confident], y.grid[confident])
        assert np.array_equal(x.grid, y.grid)
        assert np.array_equal(x.mask, y.mask)


# --------------------------------------------------------------------------- fast == reference


@pytest.mark.parametrize("kind", sorted(ANSWERS))
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fast_path_equals_reference(segmenters, kind, shape):
    seg = segmenters[kind]
    image = sample_image(11, *SHAPES[shape])
    fast = seg.segment(image, "Please segment the white horse in the image.")
    ref = seg.segment(image, "Please segment the white horse in the image.", path="reference")
    assert fast.text == ANSWERS[kind].replace("<|seg|>", "").strip()
    assert len(fast.instances) == ANSWERS[kind].count("<|seg|>")
    assert_same(fast, ref)
    gh, gw = fast.grid_size
    h, w = image.shape[:2]
    for inst in fast.instances:
        assert inst.grid.shape == (gh, gw) and inst.grid.dtype == np.uint8
        assert inst.mask.shape == (h, w) and inst.mask.dtype == np.uint8
    assert fast.image_size == (w, h)
    # Portrait images give tall grids, landscape wide ones.
    assert (gh > gw) == (h > w) or gh == gw


FREE_QUERIES = (
    "Please segment the white horse in the image.",
    "where is the cup?",
    "segment the robot arm",
)
FREE_IMAGES = ((1, 90, 130), (12, 110, 140), (23, 150, 100))


@pytest.fixture(scope="session")
def free_segmenter(tmp_path_factory):
    """Unscripted answers: the image and the query decide the tokens and the <|seg|> count."""
    path = make_test_checkpoint(
        tmp_path_factory.mktemp("free") / "ckpt", answer=None, seed=3, seg_rate=0.15
    )
    return StampSegmenter.from_pretrained(
        str(path), device="cpu", dtype="fp32", max_new_tokens=20, **SMALL
    )


def test_data_written_answers_fast_path_equals_reference(free_segmenter):
    """Text, tokens, grids and masks agree on answers no script fixed: which tokens, how many
    <|seg|> and where they sit come from the image and the query, so a path that mixed up
    positions, frames or queries would disagree (or give every input the same answer)."""
    seg = free_segmenter
    answers = {}
    for query in FREE_QUERIES:
        for s, h, w in FREE_IMAGES:
            image = sample_image(s, h, w)
            fast = seg.segment(image, query)
            assert_same(fast, seg.segment(image, query, path="reference"))
            assert len(fast.instances) == fast.token_ids.count(seg.tokens.seg)
            answers[query, s] = (tuple(fast.token_ids), len(fast.instances))
    # The precondition that makes the comparison worth something: answers vary with the data.
    assert any(len({answers[q, s] for s, _, _ in FREE_IMAGES}) > 1 for q in FREE_QUERIES)
    assert any(len({answers[q, s] for q in FREE_QUERIES}) > 1 for s, _, _ in FREE_IMAGES)
    counts = {n for _, n in answers.values()}
    assert len(counts) >= 3 and max(counts) >= 2, answers


def test_masks_are_non_trivial(segmenters):
    result = segmenters["multi"].segment(sample_image(2, 120, 160), "segment the things")
    grids = [i.grid for i in result.instances]
    assert all(0 < g.mean() < 1 for g in grids), [g.mean() for g in grids]
    # Different <|seg|> tokens see different prefixes, so their logits differ.
    assert np.abs(result.instances[0].logits - result.instances[1].logits).max() > 1e-3


def test_tiny_image_gives_one_cell(checkpoints):
    seg = StampSegmenter.from_pretrained(
        str(checkpoints["multi"]), device="cpu", min_pixels=28 * 28, max_pixels=28 * 28
    )
    image = sample_image(4, 20, 20)
    fast, ref = seg.segment(image, "what is it"), seg.segment(image, "what is it", path="reference")
    assert fast.grid_size == (1, 1)
    assert_same(fast, ref)
    for inst in fast.instances:
        assert inst.mask.shape == (20, 20)
        assert inst.area in (0, 400)


# --------------------------------------------------------------------------- teacher forcing


@pytest.mark.parametrize("kind", ["one", "multi"])
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_forced_answer_matches_generation(segmenters, kind, path):
    seg = segmenters[kind]
    image = sample_image(5, 100, 140)
    generated = seg.segment(image, "segment it", path=path)
    forced = seg.segment(image, "segment it", forced_answer_ids=generated.token_ids, path=path)
    assert forced.token_ids == generated.token_ids
    assert_same(generated, forced)
    if path == "fast":
        assert forced.timings_ms["decode"] < generated.timings_ms["decode"] + 1.0


def test_forced_answer_validation(segmenters):
    seg = segmenters["one"]
    with pytest.raises(InputError):
        seg.segment(sample_image(1, 50, 50), "x", forced_answer_ids=[10**9])
    with pytest.raises(InputError):
        seg.segment(sample_image(1, 50, 50), "x", forced_answer_ids=[seg.tokens.image_pad])


def test_seg_as_last_generated_token(checkpoints):
    """max_new_tokens cuts the answer right after <|seg|>: its KV must be fed before the masks."""
    seg = StampSegmenter.from_pretrained(str(checkpoints["one"]), device="cpu", **SMALL)
    full = seg.segment(sample_image(6, 90, 90), "find it")
    seg.max_new_tokens = full.token_ids.index(seg.tokens.seg) + 1
    cut = seg.segment(sample_image(6, 90, 90), "find it")
    assert cut.token_ids[-1] == seg.tokens.seg
    ref = seg.segment(sample_image(6, 90, 90), "find it", path="reference")
    assert_same(cut, ref)
    np.testing.assert_allclose(cut.instances[0].logits, full.instances[0].logits, atol=1e-4)


def test_typed_seg_in_query_is_ignored(segmenters):
    seg = segmenters["one"]
    image = sample_image(7, 80, 120)
    result = seg.segment(image, "what does <|seg|> mean here?")
    assert len(result.instances) == 1
    assert_same(result, seg.segment(image, "what does <|seg|> mean here?", path="reference"))


# --------------------------------------------------------------------------- mask pass internals


def _prefill_state(seg, image, query="segment it"):
    """Run phase 1 of the fast path and return what the mask pass consumes."""
    from stamp_ros.engine.prompt import build_messages, encode_prompt

    pre = seg._preprocess(image)
    ids = encode_prompt(
        seg.tokenizer,
        build_messages(query, None, seg.system_prompt),
        seg.tokens.image_pad,
        pre.num_tokens,
    )
    forced = seg.tokenizer(ANSWERS["multi"], add_special_tokens=False).input_ids
    full = torch.tensor([ids + forced])
    feats = torch.cat(
        seg.model.model.get_image_features(pre.pixel_values, pre.grid_thw).pooler_output
    )
    cache, delta, _ = seg._prefill(full, pre, feats)
    seg_idx = [i for i, t in enumerate(full[0].tolist()) if t == seg.tokens.seg]
    return pre, full, feats, cache, delta, seg_idx


def test_mask_tokens_attend_bidirectionally(segmenters):
    seg = segmenters["multi"]
    with torch.inference_mode():
        _, _, feats, cache, delta, seg_idx = _prefill_state(seg, sample_image(8, 90, 120))
        args = (seg.model, seg.classifier, cache, seg_idx[:1], delta, seg.tokens.mask)
        base = fast_mask_logits(*args, feats)
        changed = feats.clone()
        changed[-1] += 5.0  # only the LAST mask token's input changes
        moved = fast_mask_logits(*args, changed)
    assert (moved[0, 0] - base[0, 0]).abs() > 1e-4  # ... yet the FIRST token's logit moves


def test_batched_blocks_equal_separate_passes_and_cache_untouched(segmenters):
    seg = segmenters["multi"]
    with torch.inference_mode():
        _, _, feats, cache, delta, seg_idx = _prefill_state(seg, sample_image(9, 100, 100))
        length = cache.get_seq_length()
        keys0 = cache.layers[0].keys.clone()
        batched = fast_mask_logits(
            seg.model, seg.classifier, cache, seg_idx, delta, seg.tokens.mask, feats
        )
        single = torch.cat(
            [
                fast_mask_logits(
                    seg.model, seg.classifier, cache, [i], delta, seg.tokens.mask, feats
                )
                for i in seg_idx
            ]
        )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert cache.get_seq_length() == length
    assert torch.equal(cache.layers[0].keys, keys0)
    # Blocks see different prefixes, so they must not be identical.
    assert (batched[0] - batched[2]).abs().max() > 1e-4


def test_mask_positions_follow_spec(segmenters):
    """Mask token j of the seg at idx sits at pos(<|seg|>) + 1 + j on all three mRoPE axes."""
    seg = segmenters["multi"]
    lm = seg.model.model.language_model
    seen = []
    handle = lm.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["position_ids"].clone()), with_kwargs=True
    )
    try:
        with torch.inference_mode():
            pre, full, feats, cache, delta, seg_idx = _prefill_state(seg, sample_image(10, 80, 80))
            seen.clear()
            fast_mask_logits(
                seg.model, seg.classifier, cache, seg_idx, delta, seg.tokens.mask, feats
            )
    finally:
        handle.remove()
    (pos,) = seen
    n = pre.num_tokens
    assert pos.shape == (3, len(seg_idx), n)
    for k, idx in enumerate(seg_idx):
        expected = idx + delta + 1 + torch.arange(n)
        for axis in range(3):
            assert torch.equal(pos[axis, k], expected)
        # Cross-check with transformers' own mRoPE over the official prefix + masks sequence.
        mask_ids = torch.cat([full[0, : idx + 1], torch.full((n,), seg.tokens.mask)])[None]
        ref, _ = rope_index(seg.model, mask_ids, seg.tokens.image_pad, pre.grid_thw)
        assert torch.equal(ref[:, 0, idx + 1 :], pos[:, k])


# --------------------------------------------------------------------------- options and API


def test_bilinear_upsampling_keeps_grid(checkpoints):
    seg = StampSegmenter.from_pretrained(
        str(checkpoints["one"]), device="cpu", mask_upsample="bilinear", **SMALL
    )
    nearest = StampSegmenter(seg.loaded, **SMALL)
    image = sample_image(12, 130, 170)
    a, b = seg.segment(image, "x"), nearest.segment(image, "x")
    assert np.array_equal(a.instances[0].grid, b.instances[0].grid)
    assert not np.array_equal(a.instances[0].mask, b.instances[0].mask)
    assert a.instances[0].mask.shape == (130, 170)


def test_timings_progress_and_history(segmenters):
    seg = segmenters["one"]
    events = []
    result = seg.segment(
        sample_image(13, 64, 64),
        "and now the horse?",
        history=[("hello", "Hi! How can I help?"), ("segment the cup", "Sure, it is here:")],
        progress=lambda stage, text: events.append((stage, text)),
    )
    assert result.text == "Sure, it is here:"
    for key in (
        "preprocess",
        "vision",
        "prefill",
        "decode",
        "generate",
        "mask",
        "postprocess",
        "total",
    ):
        assert result.timings_ms[key] >= 0.0
    t = result.timings_ms
    assert t["generate"] == pytest.approx(t["vision"] + t["prefill"] + t["decode"], abs=0.01)
    stages = [s for s, _ in events]
    assert stages[:3] == ["preprocess", "vision", "prefill"]
    assert stages[-3:] == ["mask", "postprocess", "done"]
    decodes = [txt for s, txt in events if s == "decode"]
    assert len(decodes) == len(result.token_ids)
    assert decodes[-1].strip() == result.text


def test_history_is_placed_before_the_image_turn(segmenters):
    from stamp_ros.engine.prompt import build_messages, encode_prompt

    seg = segmenters["one"]
    msgs = build_messages("now this", [("first question", "first answer")], seg.system_prompt)
    text = seg.tokenizer.decode(encode_prompt(seg.tokenizer, msgs, seg.tokens.image_pad, 2))
    assert text.index("first answer") < text.index("<|vision_start|>") < text.index("now this")
    assert text.count("<|image_pad|>") == 2
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_cancel(segmenters):
    seg = segmenters["one"]
    with pytest.raises(InferenceCancelled):
        seg.segment(sample_image(1, 50, 50), "x", should_cancel=lambda: True)
    calls = []

    def cancel_at_mask():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(InferenceCancelled):
        seg.segment(sample_image(1, 50, 50), "x", should_cancel=cancel_at_mask)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        [[1, 2, 3]],
    ],
)
def test_bad_images(segmenters, image):
    with pytest.raises(InputError):
        segmenters["one"].segment(image, "x")


@pytest.mark.parametrize("query", ["", "   \n", "x" * 5000, "look at <|image_pad|>", None])
def test_bad_queries(segmenters, query):
    with pytest.raises(InputError):
        segmenters["one"].segment(sample_image(1, 40, 40), query)


def test_bad_history(segmenters):
    with pytest.raises(InputError):
        segmenters["one"].segment(sample_image(1, 40, 40), "x", history=[("only one",)])


def test_too_many_positions(checkpoints):
    seg = StampSegmenter.from_pretrained(str(checkpoints["one"]), device="cpu", **SMALL)
    seg.max_positions = 50
    with pytest.raises(InputError, match="positions"):
        seg.segment(sample_image(1, 60, 60), "x")


def test_cuda_request_falls_back_with_warning(checkpoints, caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with caplog.at_level(logging.WARNING, logger="stamp_ros.engine"):
        seg = StampSegmenter.from_pretrained(str(checkpoints["none"]), device="cuda", **SMALL)
    assert seg.device.type == "cpu"
    assert any("CUDA" in r.message for r in caplog.records)


def test_sam_refine_unavailable_is_clear(segmenters):
    from stamp_ros.engine.errors import EngineError

    with pytest.raises(EngineError, match=r"segment_anything|checkpoint"):
        StampSegmenter(segmenters["one"].loaded, refine="sam")


def test_seg_rate_needs_a_free_answer(tmp_path):
    with pytest.raises(ValueError, match="seg_rate"):
        make_test_checkpoint(tmp_path / "bad", answer="a <|seg|>", seg_rate=0.1)


def test_unscriptable_answer_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="cannot be scripted"):
        make_test_checkpoint(tmp_path / "bad", answer="a <|seg|> b a c")
