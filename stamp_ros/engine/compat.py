"""The transformers 5.x API differences the engine bridges (supported: 5.13 up to 6).

Each helper asks the installed model classes what they accept (their signatures), never the
version number, and passes exactly what the newest API expects when it is there:

* the KV cache argument of ``forward`` is ``cache`` from 5.24 on, ``past_key_values`` before.

Since 5.3 ``forward`` and ``get_rope_index`` take the multimodal token types
(``mm_token_type_ids``, 1 on image tokens); every supported release does, so they are always
passed. Why the range starts at 5.13: 5.0 to 5.12 fail to import as soon as ``kernels`` 0.15 or
later is installed (their hub-kernel table builds ``LayerRepository`` objects without the
version that kernels 0.15 made mandatory), and transformers 5.25 itself requires kernels 0.19,
so any environment that ever held a current transformers has it (docs/dependencies.md).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

TRANSFORMERS_SUPPORTED = ">=5.13,<6"
"""The transformers versions the engine runs on; setup.py, requirements/python.txt and
bench/gpu/run.sh say the same, and the oldest lock holds the lowest (test_dependencies.py
checks); CI tests both ends."""

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


def token_type_kwargs(ids: torch.Tensor, image_token_id: int) -> dict:
    """``mm_token_type_ids`` (1 on image tokens) for ``forward``/``generate``."""
    return {"mm_token_type_ids": (ids == image_token_id).int()}


def rope_index(
    model: torch.nn.Module, ids: torch.Tensor, image_token_id: int, grid_thw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL's 3D RoPE positions and text offset for ``ids`` (one image, ``grid_thw``)."""
    return model.model.get_rope_index(ids, (ids == image_token_id).int(), image_grid_thw=grid_thw)
