"""Greedy decoding with a preallocated (static) KV cache, optionally replayed as a CUDA graph.

Why: a STAMP answer is ~15-30 tokens, and each decode step of a 2B model is a single-token
forward of ~28 layers. On a GPU that step is bound by Python and kernel-launch overhead (a few
hundred small kernels), not by maths, so the eager loop costs ~10-20 ms per token. Capturing
one step as a CUDA graph replays all its kernels with one launch. A graph needs fixed tensor
addresses, hence the static cache (one buffer per layer, written in place at a device-side
index), a static attention mask (filled one column per step) and static input/position buffers.
Every step is written so that it advances its own state on the device (``cur += 1``, next token
fed back into the input buffer), so a replay needs no host-side work besides reading the token.

``decode_mode="static"`` runs the very same step eagerly (any device): it is what the CPU tests
check against the ordinary dynamic-cache decode. ``"cuda_graph"`` additionally captures it on
CUDA; if capture fails the decoder logs why and stays eager-static, so requests never fail
because of the optimisation.
"""

from __future__ import annotations

import logging

import torch
from transformers.cache_utils import Cache, DynamicLayer

from stamp_ros.engine.compat import cache_kwargs

logger = logging.getLogger("stamp_ros.engine")

DECODE_MODES = ("eager", "static", "cuda_graph")
CAPACITY_STEP = 256
"""Static caches are sized in multiples of this, so prompts of similar length share a graph."""


class _StaticLayer(DynamicLayer):
    """One layer's preallocated K/V; ``update`` writes at the shared device index ``cur``."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, cur: torch.Tensor):
        super().__init__()
        self.keys, self.values, self.cur = keys, values, cur
        self.device = keys.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        idx = torch.arange(key_states.shape[-2], device=self.device) + self.cur
        self.keys.index_copy_(2, idx, key_states)
        self.values.index_copy_(2, idx, value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return int(self.cur)


class _StaticCache(Cache):
    """A plain cache of static layers, iterable like ``DynamicCache`` (the mask pass needs it)."""

    def __iter__(self):
        for layer in self.layers:
            yield layer.keys, layer.values


class StaticDecoder:
    """Fixed-capacity decode state for one model; reused across requests (under the engine lock).

    The attention mask carries the causal/valid-length information, so attention over the
    whole buffer is exact: unwritten slots are masked out, never read.
    """

    def __init__(self, model, capacity: int, attn_implementation: str, use_graph: bool):
        if attn_implementation == "flash_attention_2":
            raise ValueError("static decoding needs a mask-capable attention (sdpa or eager)")
        self.model = model
        self.capacity = capacity
        cfg = model.config.get_text_config()
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        emb = model.model.language_model.embed_tokens.weight
        device, dtype = emb.device, emb.dtype
        self.device = device
        self.cur = torch.zeros(1, dtype=torch.long, device=device)
        self.delta = torch.zeros(1, dtype=torch.long, device=device)
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)
        shape = (1, kv_heads, capacity, head_dim)
        layers = []
        for _ in range(cfg.num_hidden_layers):
            k = torch.zeros(shape, dtype=dtype, device=device)
            v = torch.zeros(shape, dtype=dtype, device=device)
            layers.append(_StaticLayer(k, v, self.cur))
        self.cache = _StaticCache(layers=layers)
        self.additive = attn_implementation == "eager"
        if self.additive:
            self.mask = torch.full((1, 1, 1, capacity), torch.finfo(dtype).min, dtype=dtype,
                                   device=device)
        else:
            self.mask = torch.zeros(1, 1, 1, capacity, dtype=torch.bool, device=device)
        self.use_graph = use_graph and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self._capture_failed = False

    # ------------------------------------------------------------------ state

    @property
    def length(self) -> int:
        """Tokens currently in the cache (host sync; call between steps only)."""
        return int(self.cur)

    def load(self, cache: Cache, first_token: int, delta: int) -> None:
        """Copy a prefilled dynamic cache in and make ``first_token`` the next input."""
        length = cache.get_seq_length()
        if length + 1 > self.capacity:
            raise ValueError(f"static cache of {self.capacity} cannot hold {length + 1} tokens")
        for (k, v, *_), layer in zip(cache, self.cache.layers, strict=True):
            layer.keys[:, :, :length].copy_(k)
            layer.values[:, :, :length].copy_(v)
        self.cur.fill_(length)
        self.delta.fill_(delta)
        self.token.fill_(first_token)
        if self.additive:
            self.mask.fill_(torch.finfo(self.mask.dtype).min)
            self.mask[..., :length] = 0.0
        else:
            self.mask.zero_()
            self.mask[..., :length] = True

    def _step(self) -> None:
        """Feed ``token`` at ``cur``; leave the greedy successor in ``token``; ``cur += 1``."""
        self.mask.index_fill_(-1, self.cur, 0.0 if self.additive else True)
        positions = (self.cur + self.delta).view(1, 1, 1).expand(3, 1, 1)
        lm = self.model.model.language_model
        hidden = lm(
            input_ids=self.token,
            position_ids=positions,
            attention_mask={"full_attention": self.mask},
            use_cache=True,
            **cache_kwargs(lm, self.cache),
        ).last_hidden_state
        self.token.copy_(self.model.lm_head(hidden[:, -1]).argmax(-1).view(1, 1))
        self.cur.add_(1)

    def _capture(self) -> None:
        """Record one step as a CUDA graph (after warm-up runs on a side stream, as required)."""
        saved_cur, saved_token = self.cur.clone(), self.token.clone()
        saved_mask = self.mask.clone()
        try:
            stream = torch.cuda.Stream(device=self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            # Warm-up steps wrote two columns past the loaded prefix: restore the state.
            self.cur.copy_(saved_cur)
            self.token.copy_(saved_token)
            self.mask.copy_(saved_mask)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step()
            self.graph = graph
            logger.info("decode step captured as a CUDA graph (capacity %d)", self.capacity)
        except Exception as exc:  # pragma: no cover - CUDA only
            self._capture_failed = True
            self.graph = None
            self.cur.copy_(saved_cur)
            self.token.copy_(saved_token)
            self.mask.copy_(saved_mask)
            logger.warning("CUDA graph capture of the decode step failed (%s); decoding "
                           "with the static cache eagerly", exc)

    def step(self) -> int:
        """One greedy step; returns the new token id (the only host sync per step)."""
        if self.use_graph and self.graph is None and not self._capture_failed:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()
        return int(self.token)


def capacity_for(tokens: int) -> int:
    """Round a token count up to the static-cache bucket size."""
    return -(-tokens // CAPACITY_STEP) * CAPACITY_STEP
