"""Checkpoint loading: full model, LoRA adapter, and the clear errors for broken checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from adapters import make_test_adapter

from stamp_ros.engine.checkpoint import STAMP_TOKENS, load_stamp
from stamp_ros.engine.errors import CheckpointError
from stamp_ros.engine.segmenter import StampSegmenter
from stamp_ros.testing.checkpoint import TinyShape, make_test_checkpoint
from stamp_ros.testing.images import sample_image

SMALL = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


def _saved(directory) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's safetensors files, as written."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(Path(directory).glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


@pytest.fixture(scope="session")
def full_ckpt(tmp_path_factory):
    return make_test_checkpoint(tmp_path_factory.mktemp("full") / "ckpt", seed=5)


def test_full_checkpoint_loads(full_ckpt):
    loaded = load_stamp(str(full_ckpt), device="cpu", dtype="fp32")
    tok = loaded.tokenizer
    for name, tid in zip(
        STAMP_TOKENS,
        (loaded.tokens.seg, loaded.tokens.mask, loaded.tokens.yes, loaded.tokens.no),
        strict=True,
    ):
        assert tok.convert_tokens_to_ids(name) == tid
    assert loaded.tokens.im_end in loaded.tokens.stop_ids
    assert loaded.classifier.weight.shape == (1, loaded.config.get_text_config().hidden_size)
    # The head and the weights are the saved tensors, bit for bit (not a fresh init).
    saved = _saved(full_ckpt)
    assert torch.equal(loaded.classifier.weight, saved["classifier.weight"])
    assert torch.equal(loaded.classifier.bias, saved["classifier.bias"])
    assert float(saved["classifier.bias"]) != 0.0  # the calibrated bias, not the maker's zero
    lm_head = next(v for k, v in saved.items() if k.endswith("lm_head.weight"))
    assert torch.equal(loaded.model.lm_head.weight, lm_head)
    assert not loaded.model.training and not loaded.is_adapter
    assert loaded.attn_implementation == "sdpa"


def test_eager_attention_matches_sdpa(full_ckpt):
    image = sample_image(3, 70, 90)
    a = StampSegmenter.from_pretrained(
        str(full_ckpt), device="cpu", attn_implementation="eager", **SMALL
    )
    b = StampSegmenter.from_pretrained(str(full_ckpt), device="cpu", **SMALL)
    ra, rb = a.segment(image, "x"), b.segment(image, "x")
    assert ra.text == rb.text
    np.testing.assert_allclose(ra.instances[0].logits, rb.instances[0].logits, atol=1e-4)


def test_lora_adapter_equals_merged_full_checkpoint(tmp_path):
    base = make_test_checkpoint(
        tmp_path / "base",
        answer=None,
        stamp_tokens=False,
        classifier=False,
        shape=TinyShape(vocab_size=480),
    )
    adapter = make_test_adapter(base, tmp_path / "adapter", merged_out_dir=tmp_path / "merged")
    via_adapter = StampSegmenter.from_pretrained(
        str(adapter), device="cpu", max_new_tokens=4, **SMALL
    )
    via_full = StampSegmenter.from_pretrained(
        str(tmp_path / "merged"), device="cpu", max_new_tokens=4, **SMALL
    )
    assert via_adapter.loaded.is_adapter
    assert via_adapter.model.get_input_embeddings().num_embeddings == len(via_adapter.tokenizer)
    seg = via_adapter.tokens.seg
    image = sample_image(4, 80, 100)
    forced = [seg, via_adapter.tokens.im_end]
    ra = via_adapter.segment(image, "segment it", forced_answer_ids=forced)
    rb = via_full.segment(image, "segment it", forced_answer_ids=forced)
    np.testing.assert_allclose(ra.instances[0].logits, rb.instances[0].logits, atol=1e-4)
    ga, gb = via_adapter.segment(image, "hello"), via_full.segment(image, "hello")
    assert ga.token_ids == gb.token_ids
    # The adapter really changes the base: its trained classifier is the saved one, and the
    # LoRA deltas are merged (the base's projections moved to the merged checkpoint's).
    adapter_saved = _saved(adapter)
    for name in ("weight", "bias"):
        assert torch.equal(
            getattr(via_adapter.classifier, name),
            adapter_saved[f"base_model.model.classifier.{name}"],
        )
    q_proj = via_adapter.model.model.language_model.layers[0].self_attn.q_proj.weight
    base_q, merged_q = (
        next(v for k, v in _saved(d).items() if k.endswith("layers.0.self_attn.q_proj.weight"))
        for d in (base, tmp_path / "merged")
    )
    assert (q_proj - base_q).abs().max() > 1e-3
    torch.testing.assert_close(q_proj, merged_q, atol=1e-5, rtol=0)


def test_missing_classifier(tmp_path):
    path = make_test_checkpoint(tmp_path / "c", classifier=False)
    with pytest.raises(CheckpointError, match="classifier"):
        load_stamp(str(path), device="cpu")


def test_missing_stamp_tokens(tmp_path):
    path = make_test_checkpoint(tmp_path / "t", answer=None, stamp_tokens=False)
    with pytest.raises(CheckpointError, match="STAMP tokens"):
        load_stamp(str(path), device="cpu")


def test_bin_only_refused(tmp_path):
    path = make_test_checkpoint(tmp_path / "b", weights="bin", calibrate=False)
    assert not list(path.glob("*.safetensors"))
    with pytest.raises(CheckpointError, match="pickle"):
        load_stamp(str(path), device="cpu")


def test_unreachable_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="local path") as info:
        load_stamp("nobody/not-a-stamp-model", device="cpu")
    assert "nobody/not-a-stamp-model" in str(info.value)


def test_bad_options(full_ckpt):
    with pytest.raises(CheckpointError):
        load_stamp(str(full_ckpt), device="tpu")
    with pytest.raises(CheckpointError):
        load_stamp(str(full_ckpt), device="cpu", dtype="int8")
    with pytest.raises(CheckpointError):
        load_stamp("./does/not/exist", device="cpu")
