"""Phase 2 of STAMP: one bidirectional block of ``<|mask|>`` tokens per ``<|seg|>``.

Two implementations with the same result (spec §4, verified recipe §8):

* :func:`fast_mask_logits` reuses the prefill's vision features, embeds only the N mask tokens,
  computes positions as ``pos(<|seg|>) + 1 + j`` directly, reads the generation cache through
  read-only views, and runs every ``<|seg|>`` of the answer in one batched forward: batch row k
  attends to ``prefix[:idx_k + 1]`` plus its own N tokens (all of them, both directions).
* :func:`reference_mask_logits` is the spec's algorithm written plainly, one pass per
  ``<|seg|>``: copy-slice the cache, re-run the vision tower, embed the whole ``prefix + masks``
  sequence, recompute mRoPE positions over it, build the full (P+N)x(P+N) hybrid mask and keep
  the mask rows. It exists to check the fast path, not to be fast.

Their input is an :class:`AnswerState`: the answer of phase 1 with the KV it left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from stamp_ros.engine.compat import cache_kwargs, rope_index


@dataclass
class AnswerState:
    """What phase 1 (the answer) hands to phase 2 (the mask pass).

    ``cache`` holds the KV of the prompt and the answer up to and including its last
    ``<|seg|>``. The fast path's mask pass reuses the vision ``features`` and the RoPE offset
    ``delta``; the reference pass re-runs the model on the full ``sequence`` instead.
    """

    generated: list[int]
    cache: Any
    delta: int | None = None
    features: torch.Tensor | None = None
    sequence: torch.Tensor | None = None


class _FrozenLayer(DynamicLayer):
    """A cache layer that serves stored keys/values but never stores what it is given.

    The mask pass must see the generation cache without copying all of it up front and without
    growing or mutating it (a later ``<|seg|>`` or the caller may still need it).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.device = keys.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat(
            [self.values, value_states], dim=-2
        )


class PrefixView(Cache):
    """Read-only view of the first ``length`` positions of a cache, optionally batch-expanded."""

    def __init__(self, cache: Cache, length: int, batch: int = 1):
        layers = []
        for keys, values, *_ in cache:
            k, v = keys[:, :, :length], values[:, :, :length]
            if batch > 1:
                k = k.expand(batch, -1, -1, -1)
                v = v.expand(batch, -1, -1, -1)
            layers.append(_FrozenLayer(k, v))
        super().__init__(layers=layers)


def _mask_arg(allowed: torch.Tensor | None, attn: str, dtype: torch.dtype):
    """The per-layer mask mapping the text model accepts as is (bool for sdpa, additive for eager).

    ``None`` means "everything visible"; with ``is_causal=False`` that is the cheapest form, and
    the only one flash-attn accepts.
    """
    if allowed is None or attn == "flash_attention_2":
        return {"full_attention": None}
    if attn == "eager":
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        additive.masked_fill_(~allowed, torch.finfo(dtype).min)
        return {"full_attention": additive}
    return {"full_attention": allowed}


def fast_mask_logits(
    model,
    classifier: torch.nn.Linear,
    cache: Cache,
    seg_idx: list[int],
    rope_delta: int,
    mask_token_id: int,
    features: torch.Tensor,
    attn_implementation: str = "sdpa",
) -> torch.Tensor:
    """Classifier logits [K, N] for the K ``<|seg|>`` at absolute sequence indices ``seg_idx``.

    ``cache`` must already hold every position up to ``max(seg_idx)``; ``features`` are the
    merged vision features [N, D] of the image (row-major merged grid order).
    """
    lm = model.model.language_model
    n = features.shape[0]
    mask_emb = lm.embed_tokens.weight[mask_token_id]
    emb = (mask_emb + features.to(mask_emb.dtype)).unsqueeze(0)  # E_mask, [1, N, D]
    device = emb.device
    # flash-attn cannot take a block mask: run blocks one at a time, unmasked, non-causal.
    groups = [[i] for i in seg_idx] if attn_implementation == "flash_attention_2" else [seg_idx]
    out = []
    for group in groups:
        k = len(group)
        prefix = max(group) + 1
        idx = torch.tensor(group, device=device)
        pos = (idx[:, None] + 1 + rope_delta) + torch.arange(n, device=device)[None]
        allowed = None
        if k > 1:
            visible = torch.arange(prefix, device=device)[None] <= idx[:, None]  # [K, P]
            allowed = torch.cat(
                [
                    visible[:, None, None, :].expand(k, 1, n, prefix),
                    torch.ones(k, 1, n, n, dtype=torch.bool, device=device),
                ],
                dim=-1,
            )
        hidden = lm(
            inputs_embeds=emb.expand(k, -1, -1),
            position_ids=pos[None].expand(3, -1, -1),
            attention_mask=_mask_arg(allowed, attn_implementation, emb.dtype),
            use_cache=True,
            is_causal=False,
            **cache_kwargs(lm, PrefixView(cache, prefix, batch=k)),
        ).last_hidden_state
        out.append(classifier(hidden)[..., 0])
    return torch.cat(out, dim=0)


def reference_mask_logits(
    model,
    classifier: torch.nn.Linear,
    cache: Cache,
    sequence: torch.Tensor,
    seg_idx: list[int],
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    mask_token_id: int,
    image_token_id: int,
    attn_implementation: str = "sdpa",
) -> torch.Tensor:
    """The same logits [K, N] computed the plain, official way: one full pass per ``<|seg|>``."""
    lm = model.model.language_model
    merge = model.config.vision_config.spatial_merge_size
    n = int(grid_thw[-1].prod()) // (merge * merge)
    rows = []
    for idx in seg_idx:
        p = idx + 1
        sliced = DynamicCache(ddp_cache_data=[(k[:, :, :p], v[:, :, :p]) for k, v, *_ in cache])
        fill = torch.full((n,), mask_token_id, dtype=sequence.dtype, device=sequence.device)
        mask_ids = torch.cat([sequence[:p], fill])[None]
        embeds = lm.embed_tokens(mask_ids)
        features = torch.cat(model.model.get_image_features(pixel_values, grid_thw).pooler_output)
        features = features.to(embeds.dtype)
        is_image = (mask_ids == image_token_id)[..., None]
        embeds = embeds.masked_scatter(is_image, features)
        is_mask = mask_ids[0] == mask_token_id
        embeds[0, is_mask] = embeds[0, is_mask] + features[-n:]
        positions, _ = rope_index(model, mask_ids, image_token_id, grid_thw)
        total = p + n
        q = torch.arange(total, device=mask_ids.device)
        hybrid = (q[None, :] <= q[:, None]) | is_mask[:, None]  # causal OR "query is a mask token"
        allowed = hybrid[is_mask][None, None]  # [1, 1, N, P+N]
        hidden = lm(
            inputs_embeds=embeds[:, is_mask],
            position_ids=positions[:, :, is_mask],
            attention_mask=_mask_arg(allowed, attn_implementation, embeds.dtype),
            is_causal=False,
            **cache_kwargs(lm, sliced),
        ).last_hidden_state
        rows.append(classifier(hidden)[0, :, 0])
    return torch.stack(rows)
