"""The few transformers 5.x API differences the engine bridges (supported: 5.0 up to 6).

Each helper asks the installed model classes what they accept (their signatures), never the
version number, and passes exactly what the newest API expects when it is there:

* the KV cache argument of ``forward`` is ``cache`` from 5.24 on, ``past_key_values`` before;
* ``get_rope_index`` takes the multimodal token types from 5.3 on, before it found the image
  tokens itself from ``input_ids``;
* ``forward``/``generate`` take ``mm_token_type_ids`` from 5.3 on and refuse it before.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

TRANSFORMERS_SUPPORTED = ">=5.0,<6"
"""The transformers versions the engine runs on; setup.py, requirements/python.txt and
bench/gpu/run.sh say the same (test_dependencies.py checks), CI tests both ends."""

_PARAMS: dict[Any, frozenset[str]] = {}


def _params(fn) -> frozenset[str]:
    """Parameter names of a function (a bound method is looked up by its function)."""
    key = getattr(fn, "__func__", fn)
    names = _PARAMS.get(key)
    if names is None:
        names = frozenset(inspect.signature(key).parameters)
        _PARAMS[key] = names
    return names


def cache_kwargs(module: torch.nn.Module, cache) -> dict[str, Any]:
    """``{name: cache}`` for ``module(...)``'s KV cache argument."""
    name = "cache" if "cache" in _params(type(module).forward) else "past_key_values"
    return {name: cache}


def output_cache(output):
    """The KV cache of a model output (``cache`` from 5.24 on, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def token_type_kwargs(model: torch.nn.Module, ids: torch.Tensor, image_token_id: int) -> dict:
    """``mm_token_type_ids`` (1 on image tokens) where the model's ``forward`` takes it."""
    if "mm_token_type_ids" in _params(type(model).forward):
        return {"mm_token_type_ids": (ids == image_token_id).int()}
    return {}


def rope_index(
    model: torch.nn.Module, ids: torch.Tensor, image_token_id: int, grid_thw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL's 3D RoPE positions and text offset for ``ids`` (one image, ``grid_thw``)."""
    fn = model.model.get_rope_index
    if "mm_token_type_ids" in _params(fn):
        return fn(ids, (ids == image_token_id).int(), image_grid_thw=grid_thw)
    return fn(ids, image_grid_thw=grid_thw)
