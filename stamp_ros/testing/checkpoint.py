"""Tiny, real STAMP checkpoints for tests and benchmarks (the hub is unreachable here).

:func:`make_test_checkpoint` writes a genuine ``Qwen2VLForConditionalGeneration`` checkpoint
(safetensors, a BPE tokenizer with the Qwen2-VL and STAMP special tokens, a Qwen2-VL chat
template, generation_config.json) plus ``classifier.*`` weights, exactly the files a real STAMP
checkpoint has, only small and random.

Deterministic answers. With ``answer="..."`` the random weights are wired so that greedy decoding
emits exactly that answer followed by ``<|im_end|>`` for any image and query. How:

* Every answer word (and each ``<|seg|>``) is its own token; the hidden space is split into a
  small "control" subspace C and a free subspace F. Answer tokens, the token that ends the
  generation prompt and ``<|vision_start|>`` embed as large one-hot vectors in C; every other
  token, the vision features and all layer outputs live in F only (the rows of ``o_proj``,
  ``down_proj`` and the merger that would write into C are zeroed).
* Head 0 of layer 0 has a constant query and keys only on ``<|seg|>`` and ``<|vision_start|>``
  (on the lowest RoPE frequency, so position hardly matters). It averages a value that only
  ``<|vision_start|>`` carries, writing ``1/(1+k)`` into a C "count" dimension, where k is the
  number of ``<|seg|>`` tokens so far.
* ``lm_head`` maps (current token one-hot) -> next token, and after ``<|seg|>`` uses a convex
  piecewise-linear envelope in the count to pick the successor for the k-th ``<|seg|>``.

The rest of the network stays random and image-dependent, so mask logits are non-trivial; the
classifier bias is set to the median logit on a sample image so masks mix foreground/background.
Limits: a word may not be followed by different tokens at different places of the answer, and a
query that itself contains answer tokens or ``<|seg|>`` can derail the script.

Free answers. With ``answer=None`` the weights stay random and greedy decoding writes a
different token sequence for each image and query (bytes, mostly unreadable). ``seg_rate > 0``
adds ``<|seg|>`` and ``<|im_end|>`` to what it writes, where the data says so: each gets a random
direction as its ``lm_head`` row, scaled (on the hidden states of sample decodes) so that it
wins about ``seg_rate`` (``<|seg|>``) and ``seg_rate / 3`` (``<|im_end|>``) of the steps. How
many masks an answer has, and where they are, then depends on the image and the query: what a
test of two decoding paths needs to be able to fail.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stamp_ros.engine.checkpoint import STAMP_TOKENS, quiet_transformers
from stamp_ros.testing.images import sample_image

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
DEFAULT_ANSWER = "Sure, it is here: <|seg|>"

# The Qwen2-VL-Instruct chat template (content items may be strings or typed/untyped dicts).
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = (
    "You are a helpful assistant. Please segment the white horse in the image. "
    "Can you segment the red mug left of the laptop? Where is the person in this picture? "
    "Please respond with segmentation mask. Could you provide the segmentation mask for the dog? "
    "Sure, here is the segmentation mask. It is the object on the left. system user assistant "
    "which drawer is open? the cup, the chair, the table and the robot arm 0123456789"
)


@dataclass(frozen=True)
class TinyShape:
    """Architecture sizes of a generated checkpoint; the defaults keep tests to milliseconds."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 32
    vision_num_heads: int = 2
    vision_mlp_ratio: int = 2
    vocab_size: int | None = None
    """None: exactly len(tokenizer). Larger values pad the vocabulary like Qwen's checkpoints."""
    max_position_embeddings: int = 32768

    @classmethod
    def from_json(cls, data: dict) -> TinyShape:
        """Accept a shape file such as /work/shared/model-shapes/stamp-2b.json."""
        vc = data.get("vision_config", {})
        return cls(
            hidden_size=data["hidden_size"],
            intermediate_size=data["intermediate_size"],
            num_hidden_layers=data["num_hidden_layers"],
            num_attention_heads=data["num_attention_heads"],
            num_key_value_heads=data.get("num_key_value_heads", data["num_attention_heads"]),
            vision_depth=vc.get("depth", 2),
            vision_embed_dim=vc.get("embed_dim", 32),
            vision_num_heads=vc.get("num_heads", 2),
            vision_mlp_ratio=vc.get("mlp_ratio", 4),
            vocab_size=data.get("vocab_size"),
            max_position_embeddings=data.get("max_position_embeddings", 32768),
        )


# --------------------------------------------------------------------------- tokenizer


def _answer_words(answer: str) -> tuple[list[str], list[str]]:
    """Split an answer into non-special word pieces (own tokens) and the token-string sequence."""
    pieces: list[str] = []
    sequence: list[str] = []
    for i, segment in enumerate(answer.split("<|seg|>")):
        if i:
            sequence.append("<|seg|>")
        words = re.findall(r"\s*\S+\s*|\s+", segment)
        sequence.extend(words)
        pieces.extend(w for w in words if w not in pieces)
    return pieces, sequence


def build_tokenizer(*, stamp_tokens: bool = True, answer: str | None = None):
    """A small byte-level BPE tokenizer with the Qwen2-VL special tokens (and STAMP's)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer)
    specials = list(QWEN_SPECIALS) + (list(STAMP_TOKENS) if stamp_tokens else [])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if answer:
        words, _ = _answer_words(answer)
        tok.add_tokens([AddedToken(w, normalized=False) for w in words])
    extra = {"additional_special_tokens": list(STAMP_TOKENS)} if stamp_tokens else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN2VL_CHAT_TEMPLATE,
        model_max_length=32768,
        **extra,
    )


# --------------------------------------------------------------------------- model


def build_config(tokenizer, shape: TinyShape):
    from transformers import Qwen2VLConfig

    def tid(t: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(t))

    head_dim = shape.hidden_size // shape.num_attention_heads
    half = head_dim // 2
    mrope = [half // 4, (half - half // 4) // 2]
    mrope.append(half - sum(mrope))
    vocab = max(shape.vocab_size or 0, len(tokenizer))
    return Qwen2VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_hidden_layers,
            "num_attention_heads": shape.num_attention_heads,
            "num_key_value_heads": shape.num_key_value_heads,
            "max_position_embeddings": shape.max_position_embeddings,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            "bos_token_id": tid("<|endoftext|>"),
            "eos_token_id": tid("<|im_end|>"),
            "pad_token_id": tid("<|endoftext|>"),
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": shape.vision_depth,
            "embed_dim": shape.vision_embed_dim,
            "hidden_size": shape.hidden_size,
            "num_heads": shape.vision_num_heads,
            "mlp_ratio": shape.vision_mlp_ratio,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def _scale_random_model(model) -> None:
    """Give the random net O(1) activations so image features actually move the mask logits.

    Default initialisation (std 0.02) on a 64-wide model makes the vision features ~1e-3 next to
    O(0.1) token embeddings, which would make every mask cell look alike.
    """
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.mul_(1.0 / emb.std().clamp_min(1e-6))
        last = model.model.visual.merger.mlp[2]
        last.weight.mul_(20.0)
        last.bias.normal_(0.0, 0.1)
        # Sharper, stronger attention so each mask token really depends on the prefix it may
        # see and on the other mask tokens (the tests check both).
        for layer in model.model.language_model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.mul_(6.0)
            for proj in (layer.self_attn.v_proj, layer.self_attn.o_proj):
                proj.weight.mul_(4.0)


@dataclass
class _Plan:
    """The answer as a state machine: (token, #seg so far) -> next token."""

    state_tokens: list[int]
    successor: dict[int, int]
    seg_groups: list[tuple[int, list[int]]]
    """[(successor token, [k...])] for the token after the k-th <|seg|>, contiguous in k."""


def _plan_answer(ids: list[int], start: int, seg: int, stop: int) -> _Plan:
    seq = [start, *ids, stop]
    successor: dict[int, int] = {}
    after_seg: dict[int, int] = {}
    k = 0
    for cur, nxt in itertools.pairwise(seq):
        if cur == seg:
            k += 1
            after_seg[k] = nxt
            continue
        if successor.setdefault(cur, nxt) != nxt:
            raise ValueError(
                "answer cannot be scripted: a word is followed by different tokens in different "
                "places; make the words of the answer unique"
            )
    groups: list[tuple[int, list[int]]] = []
    for kk in sorted(after_seg):
        nxt = after_seg[kk]
        if groups and groups[-1][0] == nxt:
            groups[-1][1].append(kk)
        elif any(g[0] == nxt for g in groups):
            raise ValueError(
                "answer cannot be scripted: the same token follows non-consecutive <|seg|> tokens"
            )
        else:
            groups.append((nxt, [kk]))
    state_tokens = list(dict.fromkeys([start, seg, *successor]))
    return _Plan(state_tokens=state_tokens, successor=successor, seg_groups=groups)


def _wire_answer(model, plan: _Plan, *, anchor: int, seg: int) -> None:
    """Overwrite a few weights so greedy decoding follows ``plan`` (see the module docstring)."""
    cfg = model.config.get_text_config()
    hidden = cfg.hidden_size
    onehot = {t: 2 + i for i, t in enumerate(dict.fromkeys([*plan.state_tokens, anchor]))}
    n_ctrl = 2 + len(onehot)
    if n_ctrl > hidden // 2:
        raise ValueError(
            f"answer needs {n_ctrl} control dimensions but hidden_size={hidden}; use a shorter "
            "answer or a wider model"
        )
    count_dim, key_dim = 0, 1
    ctrl = slice(0, n_ctrl)
    amp = 30.0
    heads = cfg.num_attention_heads
    head_dim = hidden // heads
    rope_dim = head_dim // 2 - 1  # lowest RoPE frequency: position barely rotates it
    # Normalised magnitude of one control coordinate of an (amp, amp) two-hot token.
    xhat = amp / np.sqrt(2 * amp * amp / hidden)
    lm = model.get_output_embeddings().weight
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[:, ctrl] = 0.0
        for tok, dim in onehot.items():
            emb[tok] = 0.0
            emb[tok, dim] = amp
        for tok in (seg, anchor):
            emb[tok, key_dim] = amp
        merger = model.model.visual.merger.mlp[2]
        merger.weight[ctrl] = 0.0
        merger.bias[ctrl] = 0.0
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight[ctrl] = 0.0
            layer.mlp.down_proj.weight[ctrl] = 0.0
        attn = model.model.language_model.layers[0].self_attn
        hd = slice(0, head_dim)
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight[hd] = 0.0
            proj.bias[hd] = 0.0
        attn.q_proj.bias[rope_dim] = 30.0 / (head_dim**-0.5 * xhat)
        attn.k_proj.weight[rope_dim, key_dim] = 1.0
        attn.v_proj.weight[0, onehot[anchor]] = 1.0
        attn.o_proj.weight[:, hd] = 0.0
        attn.o_proj.weight[count_dim, 0] = 1.0 / xhat  # count = 1/(1+k)
        # lm_head: designed rows read only the control subspace.
        designed = set(plan.successor.values()) | {g[0] for g in plan.seg_groups}
        for tok in designed:
            lm[tok] = 0.0
        lm[:, ctrl] = 0.0
        mu = 1000.0
        n_groups = len(plan.seg_groups)
        alpha = 2.0 * mu * (n_groups + 1) / amp
        for cur, nxt in plan.successor.items():
            lm[nxt, onehot[cur]] += alpha
        # After the k-th <|seg|> the count is c_k = 1/(1+k). Lines with slopes increasing in c,
        # crossing midway between the groups' c values, make each group win on its own range.
        groups = sorted(plan.seg_groups, key=lambda g: 1.0 / (1 + g[1][0]))
        offset = mu * (n_groups + 1)
        intercept = 0.0
        for i, (tok, ks) in enumerate(groups):
            slope = mu * (i + 1)
            if i:
                prev_ks = groups[i - 1][1]
                beta = (1.0 / (1 + min(prev_ks)) + 1.0 / (1 + max(ks))) / 2
                intercept += (mu * i - slope) * beta
            lm[tok, count_dim] += slope
            lm[tok, onehot[seg]] += (intercept + offset) / amp


def save_classifier(directory: Path, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Append ``classifier.*`` to the first safetensors shard, as the reference trainer saves it."""
    from safetensors.torch import load_file, save_file

    shard = sorted(directory.glob("*.safetensors"))[0]
    state = load_file(str(shard))
    state["classifier.weight"] = weight.detach().float().contiguous().clone()
    state["classifier.bias"] = bias.detach().float().contiguous().clone()
    save_file(state, str(shard), metadata={"format": "pt"})
    index = directory / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        for key in ("classifier.weight", "classifier.bias"):
            data["weight_map"][key] = shard.name
        index.write_text(json.dumps(data, indent=2))


STOP_SHARE = 6
_FREE_QUERIES = (
    "Please segment the object.",
    "Where is the dog?",
    "Could you provide the segmentation mask for the chair?",
    "which drawer is open?",
)


def _calibration_segmenter(directory: Path, max_new_tokens: int) -> Any:
    """The freshly written checkpoint on CPU in fp32, with small images: what the calibration
    steps run to measure the random network's logits."""
    from stamp_ros.engine.segmenter import StampSegmenter

    return StampSegmenter.from_pretrained(str(directory), device="cpu", dtype="fp32",
                                          min_pixels=56 * 56, max_pixels=224 * 224,
                                          max_new_tokens=max_new_tokens)


def _wire_free_answer(directory: Path, seed: int, seg_rate: float) -> None:
    """Give ``<|seg|>`` and ``<|im_end|>`` data-dependent ``lm_head`` rows (see the docstring).

    Greedy decodes of sample images and queries with the unwired weights give the hidden states
    ``h`` that reach ``lm_head``. A token with row ``c * u`` (``u`` a random unit vector) wins a
    step when ``c * (u . h)`` beats every other logit; ``c`` is set between two of those
    thresholds so that the token wins the wanted share of the sample steps, with a margin.
    """
    from safetensors.torch import load_file, save_file

    seg = _calibration_segmenter(directory, max_new_tokens=12)
    states: list[torch.Tensor] = []
    hook = seg.model.lm_head.register_forward_pre_hook(
        lambda _mod, args: states.append(args[0].detach().reshape(-1, args[0].shape[-1]))
    )
    try:
        for i, query in enumerate(_FREE_QUERIES):
            for j, (h, w) in enumerate(((84, 112), (140, 100), (96, 96))):
                seg.segment(sample_image(seed + 100 + 3 * i + j, h, w), query)
    finally:
        hook.remove()
    hidden = torch.cat(states).double()
    shard = sorted(directory.glob("*.safetensors"))[0]
    tensors = load_file(str(shard))
    key = next(k for k in tensors if k.endswith("lm_head.weight"))
    lm = tensors[key].double()
    specials = [seg.tokens.seg, seg.tokens.im_end, *seg.tokens.stop_ids]
    others = hidden @ lm.T
    others[:, specials] = -torch.inf
    best_other = others.max(dim=1).values
    gen = torch.Generator().manual_seed(seed + 11)
    for token, rate in ((seg.tokens.seg, seg_rate), (seg.tokens.im_end, seg_rate / STOP_SHARE)):
        u = torch.randn(lm.shape[1], generator=gen, dtype=torch.float64)
        u /= u.norm()
        proj = hidden @ u
        ratios = (best_other[proj > 0] / proj[proj > 0]).sort().values
        k = min(max(1, round(rate * len(hidden))), len(ratios) - 1)
        scale = max(float(ratios[k - 1] + ratios[k]) / 2, 1e-3)
        lm[token] = scale * u
    tensors[key] = lm.to(tensors[key].dtype).contiguous()
    save_file(tensors, str(shard), metadata={"format": "pt"})


def _calibrate_bias(directory: Path, seed: int, answer: str | None) -> float:
    """Median mask logit on sample images, so the saved bias splits cells roughly 50/50."""
    seg = _calibration_segmenter(directory, max_new_tokens=1)
    tokens = seg.tokens
    forced = [tokens.seg]
    if answer and "<|seg|>" in answer:
        forced = seg.tokenizer(answer, add_special_tokens=False).input_ids
    logits = [
        seg.segment(
            sample_image(seed + i, h, w),
            "Please segment the object.",
            forced_answer_ids=[*forced, tokens.im_end],
        )
        .instances[0]
        .logits.ravel()
        for i, (h, w) in enumerate(((84, 112), (160, 120)))
    ]
    return float(np.median(np.concatenate(logits)))


def make_test_checkpoint(
    out_dir: str | Path,
    *,
    seed: int = 0,
    answer: str | None = DEFAULT_ANSWER,
    shape: TinyShape | None = None,
    classifier: bool = True,
    stamp_tokens: bool = True,
    weights: str = "safetensors",
    calibrate: bool = True,
    save_dtype: torch.dtype = torch.float32,
    seg_rate: float = 0.0,
) -> Path:
    """Write a tiny random STAMP checkpoint to ``out_dir`` and return its path.

    ``answer``: the text greedy decoding will produce for any image/query (``<|seg|>`` marks mask
    tokens; ``""`` answers with ``<|im_end|>`` at once); ``None`` leaves the weights unwired.
    Broken variants for loader tests: ``classifier=False`` (no head), ``stamp_tokens=False``
    (a plain Qwen2-VL tokenizer), ``weights="bin"`` (pickle-only weights).
    ``save_dtype=torch.bfloat16`` halves the files of large benchmark shapes (the scripted
    answer survives bf16: its logit margins are in the hundreds); ``calibrate=False`` skips
    the CPU inference that centres the classifier bias (masks are then lopsided, timings equal).
    ``seg_rate`` (with ``answer=None``): free answers whose ``<|seg|>`` and ``<|im_end|>``
    tokens are chosen by the image and the query (about that share of the decoding steps).
    """
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shape = shape or TinyShape()
    scripted = answer is not None and stamp_tokens
    if seg_rate and (
        answer is not None
        or not stamp_tokens
        or not classifier
        or weights != "safetensors"
        or save_dtype != torch.float32
    ):
        raise ValueError("seg_rate needs answer=None and a full fp32 safetensors checkpoint")
    tokenizer = build_tokenizer(stamp_tokens=stamp_tokens, answer=answer if scripted else None)
    config = build_config(tokenizer, shape)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    _scale_random_model(model)
    if scripted:
        seg_id = tokenizer.convert_tokens_to_ids("<|seg|>")
        stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        start = tokenizer(prompt, add_special_tokens=False).input_ids[-1]
        ids = tokenizer(answer, add_special_tokens=False).input_ids
        if tokenizer.decode(ids) != answer:
            raise ValueError(f"answer {answer!r} does not round-trip through the tokenizer")
        plan = _plan_answer(ids, start, seg_id, stop)
        _wire_answer(model, plan, anchor=config.vision_start_token_id, seg=seg_id)
    hidden = shape.hidden_size
    gen = torch.Generator().manual_seed(seed + 1)
    head_w = torch.randn(1, hidden, generator=gen) / hidden**0.5
    if scripted:
        head_w[:, : hidden // 2] = 0.0  # never read the control subspace
    head_b = torch.zeros(1)

    if weights == "bin":
        torch.save(model.state_dict(), out / "pytorch_model.bin")
        config.save_pretrained(out)
    elif weights == "safetensors":
        if save_dtype != torch.float32:
            model = model.to(save_dtype)
            config.dtype = save_dtype
        with quiet_transformers():
            model.save_pretrained(out)
    else:
        raise ValueError(f"weights must be 'safetensors' or 'bin', got {weights!r}")
    tokenizer.save_pretrained(out)
    stop_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    stop_ids.append(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    GenerationConfig(
        do_sample=False,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=config.text_config.bos_token_id,
    ).save_pretrained(out)
    if classifier and weights == "safetensors":
        save_classifier(out, head_w, head_b)
        if seg_rate:
            _wire_free_answer(out, seed, seg_rate)
        if calibrate and stamp_tokens:
            save_classifier(
                out, head_w, head_b - _calibrate_bias(out, seed, answer if scripted else None)
            )
    return out
