"""Phase 1 of the reference path: the answer through transformers' own ``generate``.

The fast path runs its own prefill/decode loop; this one lets transformers do it, exactly as
the official STAMP code does, so the tests (and the external harness) can hold the fast path to
it token for token. Module hooks split its wall time into vision, prefill and decoding.
"""

from __future__ import annotations

import torch

from stamp_ros.engine.checkpoint import LoadedStamp
from stamp_ros.engine.compat import cache_kwargs, output_cache, token_type_kwargs
from stamp_ros.engine.maskpass import AnswerState
from stamp_ros.engine.preprocess import Preprocessed
from stamp_ros.engine.timing import StageClock, now, time_module_calls

__all__ = ["reference_answer"]


def reference_answer(
    loaded: LoadedStamp,
    ids: torch.Tensor,
    pre: Preprocessed,
    forced: list[int] | None,
    clock: StageClock,
    limit: int,
) -> AnswerState:
    """transformers ``generate`` (or one teacher-forced forward), timed with module hooks.

    Fills ``clock.ms`` with ``vision``, ``prefill`` and ``decode``. The returned cache also holds
    the answer's last ``<|seg|>`` (fed here if decoding stopped right after it), as the mask
    pass needs every ``<|seg|>`` in the KV.
    """
    from transformers import GenerationConfig

    model, tokens, device = loaded.model, loaded.tokens, loaded.device
    inputs = {
        "pixel_values": pre.pixel_values,
        "image_grid_thw": pre.grid_thw,
    }
    calls: list[float] = []
    vision_ms: list[float] = []
    hooks = time_module_calls(model, calls)
    hooks += time_module_calls(model.model.visual, vision_ms)
    t0 = now()
    try:
        if forced is None:
            config = GenerationConfig(
                max_new_tokens=limit,
                do_sample=False,
                eos_token_id=list(tokens.stop_ids),
                pad_token_id=tokens.pad if tokens.pad is not None else tokens.im_end,
                return_dict_in_generate=True,
                use_cache=True,
            )
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=config,
                **token_type_kwargs(ids, tokens.image_pad),
                **inputs,
            )
            sequence, cache = out.sequences[0], output_cache(out)
        else:
            sequence = torch.cat([ids[0], torch.tensor(forced, dtype=torch.long, device=device)])
            out = model(
                input_ids=sequence[None],
                use_cache=True,
                **token_type_kwargs(sequence[None], tokens.image_pad),
                **inputs,
            )
            cache = output_cache(out)
    finally:
        for h in hooks:
            h.remove()
    total = (now() - t0) * 1000.0
    generated = sequence[ids.shape[1] :].tolist()
    # generate() runs the vision tower before its first forward; a teacher-forced forward
    # runs it inside. Either way: vision, then the rest of the first call, then decoding.
    vision = sum(vision_ms)
    first = calls[0] if calls else total
    prefill = first - vision if forced is not None else first
    clock.ms.update(vision=vision, prefill=prefill, decode=max(0.0, total - vision - prefill))
    segs = [j for j, t in enumerate(generated) if t == tokens.seg]
    cached = cache.get_seq_length() - ids.shape[1]
    if segs and segs[-1] >= cached:
        tail = sequence[ids.shape[1] + cached : ids.shape[1] + segs[-1] + 1][None]
        model(input_ids=tail, use_cache=True, **cache_kwargs(model, cache))
    return AnswerState(generated=generated, cache=cache, sequence=sequence)

