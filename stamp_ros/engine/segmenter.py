"""StampSegmenter: image + query (+ text history) -> answer text and one mask per ``<|seg|>``.

Phase 1 is ordinary greedy chat decoding; phase 2 (``maskpass``) turns each ``<|seg|>`` of the
answer into a merged-patch grid. Two paths give the same masks:

* ``path="fast"`` (default): our own prefill/decode loop, so the vision features are computed
  once and reused, stages are timed separately, progress is reported per token and cancellation
  is polled; all mask passes of an answer run batched in one forward.
* ``path="reference"``: transformers' ``generate`` followed by the plain per-``<|seg|>`` mask pass
  of the spec. Slow on purpose; the tests hold the fast path to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from stamp_ros.engine import masks as mask_ops
from stamp_ros.engine.checkpoint import DEFAULT_MODEL, LoadedStamp, load_stamp
from stamp_ros.engine.decode import DECODE_MODES, StaticDecoder, capacity_for
from stamp_ros.engine.errors import InferenceCancelled, InputError
from stamp_ros.engine.maskpass import fast_mask_logits, reference_mask_logits
from stamp_ros.engine.preprocess import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    Preprocessed,
    VisionGeometry,
    preprocess_pil,
    preprocess_torch,
    smart_resize,
    validate_image,
)
from stamp_ros.engine.prompt import DEFAULT_SYSTEM_PROMPT, build_messages, encode_prompt
from stamp_ros.engine.result import SegInstance, StampResult

logger = logging.getLogger("stamp_ros.engine")

Progress = Callable[[str, str], None]
CancelCheck = Callable[[], bool]

PATHS = ("fast", "reference")
PREPROCESSORS = ("auto", "pil", "torch")
_CANCEL_EVERY = 4  # decode steps between cancel polls
_MAX_STATIC_DECODERS = 2  # capacity buckets kept alive (each holds a KV buffer and a graph)


@dataclass
class _PrefixEntry:
    """KV of ``system + history + <|vision_start|> image <|vision_end|>`` for one frame.

    Causal attention makes this KV independent of whatever follows, so any later query on the
    same frame (same prompt prefix) can start from it: no preprocessing, no vision tower and a
    prefill of only the query's ~20 tokens.
    """

    prefix_ids: tuple[int, ...]
    settings: tuple
    frame_key: Hashable | None
    image: np.ndarray | None
    """A private copy of the frame when the caller gave no ``frame_key`` (content identity)."""
    pre: Preprocessed
    features: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    delta: int


def _same_frame(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact content equality, with a cheap strided probe first (different frames exit early)."""
    if a.shape != b.shape:
        return False
    if not np.array_equal(a[::17, ::13], b[::17, ::13]):
        return False
    return bool(np.array_equal(a, b))


def _now() -> float:
    return time.perf_counter()


class _Clock:
    """Stage stopwatch; synchronises CUDA so GPU stages are not under-reported."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.ms: dict[str, float] = {}
        self.start = _now()

    @contextmanager
    def stage(self, name: str):
        self.sync()
        t0 = _now()
        try:
            yield
        finally:
            self.sync()
            self.ms[name] = self.ms.get(name, 0.0) + (_now() - t0) * 1000.0


class StampSegmenter:
    """The inference engine used by the ROS node, the CLI and the benchmarks."""

    def __init__(
        self,
        loaded: LoadedStamp,
        *,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_new_tokens: int = 128,
        mask_upsample: str = "nearest",
        refine: str | None = None,
        sam_checkpoint: str | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        preprocess: str = "auto",
        path: str = "fast",
        prefix_cache: int = 2,
        decode_mode: str = "eager",
    ):
        if mask_upsample not in mask_ops.UPSAMPLE_MODES:
            raise ValueError(f"mask_upsample must be one of {mask_ops.UPSAMPLE_MODES}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}")
        if preprocess not in PREPROCESSORS:
            raise ValueError(f"preprocess must be one of {PREPROCESSORS}")
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if prefix_cache < 0:
            raise ValueError("prefix_cache must be >= 0")
        if decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode must be one of {DECODE_MODES}")
        self.loaded = loaded
        self.model = loaded.model
        self.classifier = loaded.classifier
        self.tokenizer = loaded.tokenizer
        self.tokens = loaded.tokens
        self.device = loaded.device
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.max_new_tokens = max_new_tokens
        self.mask_upsample = mask_upsample
        self.system_prompt = system_prompt
        self.path = path
        self.preprocess_mode = preprocess
        self.prefix_cache_size = prefix_cache
        self._prefixes: list[_PrefixEntry] = []
        self.decode_mode = decode_mode
        if decode_mode != "eager" and loaded.attn_implementation == "flash_attention_2":
            logger.warning("decode_mode=%s needs sdpa or eager attention; decoding eagerly",
                           decode_mode)
            self.decode_mode = "eager"
        if decode_mode == "cuda_graph" and self.device.type != "cuda":
            # Same maths without the graph; keeps CPU runs of a GPU configuration working.
            self.decode_mode = "static"
        self._decoders: dict[int, StaticDecoder] = {}
        vc = self.model.config.vision_config
        self.geometry = VisionGeometry(vc.patch_size, vc.temporal_patch_size, vc.spatial_merge_size)
        self.max_positions = self.model.config.get_text_config().max_position_embeddings
        self.refiner = None
        if refine is not None:
            from stamp_ros.engine.refine import SamRefiner

            self.refiner = SamRefiner.create(refine, sam_checkpoint, device=self.device)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = "auto",
        **options,
    ) -> StampSegmenter:
        """Load a checkpoint (see :func:`load_stamp`) and wrap it; ``options`` go to __init__.

        ``attn_implementation="auto"`` is sdpa, or flash-attn 2 on CUDA when it is installed.
        """
        loaded = load_stamp(
            model, device=device, dtype=dtype, attn_implementation=attn_implementation
        )
        return cls(loaded, **options)

    # ------------------------------------------------------------------ public

    def segment(
        self,
        image: np.ndarray,
        query: str,
        history: Sequence[tuple[str, str]] | None = None,
        *,
        progress: Progress | None = None,
        should_cancel: CancelCheck | None = None,
        forced_answer_ids: Sequence[int] | None = None,
        path: str | None = None,
        frame_key: Hashable | None = None,
    ) -> StampResult:
        """Answer ``query`` about ``image`` (HxWx3 uint8 RGB) and predict a mask per ``<|seg|>``.

        ``forced_answer_ids`` skips decoding and teacher-forces those answer ids in the prefill
        (continuous tracking re-uses the first answer this way). ``frame_key`` names the frame
        for the prefix cache (e.g. camera + stamp); without it a frame is recognised by its
        content. Raises :class:`InputError` for unusable input and :class:`InferenceCancelled`
        when ``should_cancel`` returns True.
        """
        path = path or self.path
        if path not in PATHS:
            raise InputError(f"path must be one of {PATHS}, got {path!r}")
        image = validate_image(image)
        messages = build_messages(query, history, self.system_prompt)
        forced = self._check_forced(forced_answer_ids)
        report = progress or (lambda stage, text: None)
        cancelled = should_cancel or (lambda: False)
        with self._lock, torch.inference_mode():
            return self._run(image, messages, forced, path, report, cancelled, frame_key)

    def warmup(self, size_hw: tuple[int, int] = (64, 64)) -> dict[str, float]:
        """Run one small inference so the first real request does not pay for lazy set-up.

        On a GPU the first forward selects kernels, grows the caching allocator and (with
        ``decode_mode="cuda_graph"``) captures the decode graph: hundreds of milliseconds that
        would otherwise land on the first request. The image is resized to the configured
        pixel range like any frame, so the warm-up exercises the real shapes. Two runs: a
        2-token decode (vision, prefill, decode) and a teacher-forced ``<|seg|>`` on the same
        frame (prefix reuse, mask pass, upsampling). Returns the wall times (ms).
        """
        h, w = size_hw
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                          (xx + yy) % 256], axis=2).astype(np.uint8)
        messages = build_messages("Please segment the object.", None, self.system_prompt)
        quiet = lambda *_: None  # noqa: E731
        never = lambda: False  # noqa: E731
        forced = [self.tokens.seg, self.tokens.im_end]
        times: dict[str, float] = {}
        with self._lock, torch.inference_mode():
            t0 = _now()
            self._run(image, messages, None, "fast", quiet, never, None, max_new_tokens=2)
            times["decode_run_ms"] = (_now() - t0) * 1000.0
            t0 = _now()
            self._run(image, messages, forced, "fast", quiet, never, None)
            times["mask_run_ms"] = (_now() - t0) * 1000.0
            self._prefixes.clear()
        return times

    def clear_prefix_cache(self) -> None:
        """Forget every cached frame prefix (frees its KV and vision features)."""
        with self._lock:
            self._prefixes.clear()

    # ------------------------------------------------------------------ pipeline

    def _check_forced(self, forced: Sequence[int] | None) -> list[int] | None:
        if forced is None:
            return None
        vocab = self.model.config.get_text_config().vocab_size
        ids = [int(i) for i in forced]
        bad = [i for i in ids if not 0 <= i < vocab or i == self.tokens.image_pad]
        if bad:
            raise InputError(f"forced_answer_ids contains invalid ids {bad[:5]}")
        return ids

    def _preprocess_kind(self) -> str:
        mode = self.preprocess_mode
        if mode == "auto":
            mode = "torch" if self.device.type == "cuda" else "pil"
        return mode

    def _merged_tokens(self, image: np.ndarray) -> int:
        """Mask/image token count from the resize arithmetic alone (no pixels touched)."""
        geo = self.geometry
        rh, rw = smart_resize(*image.shape[:2], geo.factor, self.min_pixels, self.max_pixels)
        return (rh // geo.factor) * (rw // geo.factor)

    def _lookup_prefix(self, prefix_ids: tuple, settings: tuple, image, frame_key):
        for i, entry in enumerate(self._prefixes):
            if entry.prefix_ids != prefix_ids or entry.settings != settings:
                continue
            if frame_key is not None:
                hit = entry.frame_key == frame_key
            else:
                hit = entry.frame_key is None and _same_frame(entry.image, image)
            if hit:
                self._prefixes.insert(0, self._prefixes.pop(i))  # most recently used first
                return entry
        return None

    def _store_prefix(self, entry: _PrefixEntry) -> None:
        self._prefixes.insert(0, entry)
        del self._prefixes[self.prefix_cache_size :]

    def _preprocess(self, image: np.ndarray) -> Preprocessed:
        mode = self._preprocess_kind()
        kwargs = {
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "geometry": self.geometry,
        }
        if mode == "torch":
            pre = preprocess_torch(image, device=self.device, **kwargs)
        else:
            pre = preprocess_pil(image, **kwargs)
        pre.pixel_values = pre.pixel_values.to(self.device, self.model.dtype)
        pre.grid_thw = pre.grid_thw.to(self.device)
        return pre

    def _run(
        self, image, messages, forced, path, report, cancelled, frame_key, max_new_tokens=None
    ) -> StampResult:
        clock = _Clock(self.device)
        limit = max_new_tokens or self.max_new_tokens

        def checkpoint(stage: str, text: str = "") -> None:
            if cancelled():
                raise InferenceCancelled(f"cancelled before {stage}")
            report(stage, text)

        checkpoint("preprocess")
        prefix = None
        with clock.stage("preprocess"):
            num_tokens = self._merged_tokens(image)
            prompt = encode_prompt(self.tokenizer, messages, self.tokens.image_pad, num_tokens)
            budget = len(prompt) + (len(forced) if forced is not None else limit)
            if budget + num_tokens > self.max_positions:
                raise InputError(
                    f"prompt ({len(prompt)} tokens incl. {num_tokens} image tokens) plus the "
                    f"answer and mask tokens exceed the model's {self.max_positions} positions"
                )
            ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
            if path == "fast":
                # The frame prefix ends with <|vision_end|> (right after the last image pad).
                end = max(i for i, t in enumerate(prompt) if t == self.tokens.image_pad) + 1
                if end < len(prompt) and prompt[end] == self.tokens.vision_end:
                    end += 1
                settings = (self._preprocess_kind(), self.min_pixels, self.max_pixels)
                key = (tuple(prompt[:end]), settings)
                entry = None
                if self.prefix_cache_size > 0:
                    entry = self._lookup_prefix(*key, image, frame_key)
                prefix = {"end": end, "key": key, "entry": entry, "frame_key": frame_key,
                          "image": image}
            if prefix is not None and prefix["entry"] is not None:
                pre = prefix["entry"].pre
            else:
                pre = self._preprocess(image)
        run = self._phase1_fast if path == "fast" else self._phase1_reference
        state = run(ids, pre, forced, clock, checkpoint, report, cancelled, limit, prefix)
        generated: list[int] = state["generated"]
        text = self.tokenizer.decode(generated, skip_special_tokens=True).strip()
        clock.ms["generate"] = sum(clock.ms.get(k, 0.0) for k in ("vision", "prefill", "decode"))
        # Only <|seg|> tokens the model produced count, never ones typed into the prompt.
        seg_idx = [len(prompt) + j for j, t in enumerate(generated) if t == self.tokens.seg]

        checkpoint("mask", text)
        with clock.stage("mask"):
            logits = self._mask_logits(path, state, ids, pre, seg_idx)
        checkpoint("postprocess", text)
        with clock.stage("postprocess"):
            instances = self._postprocess(image, logits, pre)
        clock.ms["total"] = (_now() - clock.start) * 1000.0
        report("done", text)
        h, w = image.shape[:2]
        return StampResult(
            text=text,
            instances=instances,
            image_size=(w, h),
            grid_size=pre.merged_hw,
            timings_ms={k: round(v, 3) for k, v in clock.ms.items()},
            token_ids=generated,
        )

    # ------------------------------------------------------------------ phase 1, fast

    def _prefill(self, ids: torch.Tensor, pre: Preprocessed, features: torch.Tensor):
        lm = self.model.model.language_model
        embeds = lm.embed_tokens(ids)
        embeds[ids == self.tokens.image_pad] = features.to(embeds.dtype)
        positions, delta = self.model.model.get_rope_index(
            ids, (ids == self.tokens.image_pad).int(), image_grid_thw=pre.grid_thw
        )
        cache = DynamicCache(config=self.model.config)
        hidden = lm(
            inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True
        ).last_hidden_state
        return cache, int(delta.reshape(-1)[0]), hidden[:, -1]

    def _extend(self, cache, tokens: list[int], delta: int) -> torch.Tensor:
        """Feed ``tokens`` after the cached ones (text positions); return the last hidden state."""
        start = cache.get_seq_length()
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(tokens), device=self.device) + delta
        hidden = self.model.model.language_model(
            input_ids=ids,
            position_ids=positions.view(1, 1, -1).expand(3, 1, -1),
            cache=cache,
            use_cache=True,
        ).last_hidden_state
        return hidden[:, -1]

    def _phase1_fast(
        self, ids, pre, forced, clock, checkpoint, report, cancelled, limit, prefix=None
    ) -> dict:
        entry = prefix["entry"] if prefix is not None else None
        checkpoint("vision")
        with clock.stage("vision"):
            if entry is not None:
                features = entry.features
            else:
                out = self.model.model.get_image_features(pre.pixel_values, pre.grid_thw)
                features = torch.cat(out.pooler_output)
        checkpoint("prefill")
        with clock.stage("prefill"):
            full = (
                ids
                if not forced
                else torch.cat(
                    [ids, torch.tensor([forced], dtype=torch.long, device=self.device)], dim=1
                )
            )
            if prefix is None:
                cache, delta, last = self._prefill(full, pre, features)
            else:
                # Always prefill in two chunks (frame prefix, then query + forced answer), so a
                # prefix-cache hit, a miss and a run with the cache off do exactly the same
                # arithmetic: results never depend on caching. Costs one short extra forward.
                end = prefix["end"]
                if entry is None:
                    cache, delta, _ = self._prefill(full[:, :end], pre, features)
                    if self.prefix_cache_size > 0:
                        self._remember(prefix, pre, features, cache, delta)
                else:
                    delta = entry.delta
                    cache = DynamicCache(ddp_cache_data=entry.kv)
                last = self._extend(cache, full[0, end:].tolist(), delta)
        generated: list[int] = list(forced) if forced is not None else []
        with clock.stage("decode"):
            if forced is None and self.decode_mode != "eager":
                generated, cache = self._decode_static(
                    cache, delta, last, report, cancelled, limit
                )
            elif forced is None:
                generated = self._decode(cache, delta, last, report, cancelled, limit)
            # A <|seg|> at the very end (max_new_tokens hit) has no KV yet: feed it now.
            segs = [j for j, t in enumerate(generated) if t == self.tokens.seg]
            if isinstance(cache, StaticDecoder):
                if segs and segs[-1] >= cache.length - ids.shape[1]:
                    cache.step()  # feeds the last generated token (the <|seg|>)
                cache = cache.cache
            else:
                cached = cache.get_seq_length() - ids.shape[1]
                if segs and segs[-1] >= cached:
                    self._extend(cache, generated[cached : segs[-1] + 1], delta)
        return {"generated": generated, "cache": cache, "delta": delta, "features": features}

    def _remember(self, prefix, pre, features, cache, delta) -> _PrefixEntry:
        """Keep the just-computed frame prefix (KV tensors are never mutated afterwards)."""
        frame_key = prefix["frame_key"]
        meta = Preprocessed(
            pixel_values=torch.empty(0, device=self.device),  # not needed on a hit
            grid_thw=pre.grid_thw,
            resized_hw=pre.resized_hw,
            merge_size=pre.merge_size,
        )
        entry = _PrefixEntry(
            prefix_ids=prefix["key"][0],
            settings=prefix["key"][1],
            frame_key=frame_key,
            image=None if frame_key is not None else np.array(prefix["image"], copy=True),
            pre=meta,
            features=features,
            kv=[(k, v) for k, v, *_ in cache],
            delta=delta,
        )
        self._store_prefix(entry)
        return entry

    def _decoder(self, tokens: int) -> StaticDecoder:
        capacity = capacity_for(tokens)
        dec = self._decoders.pop(capacity, None)
        if dec is None:
            dec = StaticDecoder(
                self.model,
                capacity,
                self.loaded.attn_implementation,
                use_graph=self.decode_mode == "cuda_graph",
            )
        self._decoders[capacity] = dec  # most recently used last
        while len(self._decoders) > _MAX_STATIC_DECODERS:
            self._decoders.pop(next(iter(self._decoders)))
        return dec

    def _decode_static(self, cache, delta, last_hidden, report, cancelled, limit):
        """Greedy decoding on a static cache (and a CUDA graph); same tokens as ``_decode``."""
        stops = set(self.tokens.stop_ids)
        token = int(self.model.lm_head(last_hidden).argmax(-1)[0])
        # Sized by max_new_tokens, not by this call's limit, so the warm-up's graph is reused.
        dec = self._decoder(cache.get_seq_length() + max(limit, self.max_new_tokens) + 1)
        dec.load(cache, token, delta)
        generated: list[int] = []
        while True:
            generated.append(token)
            report("decode", self.tokenizer.decode(generated, skip_special_tokens=True))
            if token in stops or len(generated) >= limit:
                return generated, dec
            if len(generated) % _CANCEL_EVERY == 0 and cancelled():
                raise InferenceCancelled("cancelled during decoding")
            token = dec.step()

    def _decode(self, cache, delta, last_hidden, report, cancelled, limit=None) -> list[int]:
        stops = set(self.tokens.stop_ids)
        generated: list[int] = []
        lm_head = self.model.lm_head
        while True:
            token = int(lm_head(last_hidden).argmax(-1)[0])
            generated.append(token)
            report("decode", self.tokenizer.decode(generated, skip_special_tokens=True))
            if token in stops or len(generated) >= (limit or self.max_new_tokens):
                return generated
            if len(generated) % _CANCEL_EVERY == 0 and cancelled():
                raise InferenceCancelled("cancelled during decoding")
            last_hidden = self._extend(cache, [token], delta)

    # ------------------------------------------------------------------ phase 1, reference

    def _phase1_reference(
        self, ids, pre, forced, clock, checkpoint, report, cancelled, limit, prefix=None
    ) -> dict:
        """transformers ``generate`` (or one teacher-forced forward), timed with module hooks."""
        from transformers import GenerationConfig

        inputs = {
            "pixel_values": pre.pixel_values,
            "image_grid_thw": pre.grid_thw,
        }
        calls: list[float] = []
        vision_ms: list[float] = []
        hooks = _time_module(self.model, calls) + _time_module(self.model.model.visual, vision_ms)
        checkpoint("prefill")
        t0 = _now()
        try:
            if forced is None:
                config = GenerationConfig(
                    max_new_tokens=limit,
                    do_sample=False,
                    eos_token_id=list(self.tokens.stop_ids),
                    pad_token_id=self.tokens.pad
                    if self.tokens.pad is not None
                    else self.tokens.im_end,
                    return_dict_in_generate=True,
                    use_cache=True,
                )
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    mm_token_type_ids=(ids == self.tokens.image_pad).int(),
                    generation_config=config,
                    **inputs,
                )
                sequence, cache = out.sequences[0], _cache_of(out)
            else:
                sequence = torch.cat(
                    [ids[0], torch.tensor(forced, dtype=torch.long, device=self.device)]
                )
                out = self.model(
                    input_ids=sequence[None],
                    mm_token_type_ids=(sequence[None] == self.tokens.image_pad).int(),
                    use_cache=True,
                    **inputs,
                )
                cache = _cache_of(out)
        finally:
            for h in hooks:
                h.remove()
        total = (_now() - t0) * 1000.0
        generated = sequence[ids.shape[1] :].tolist()
        # generate() runs the vision tower before its first forward; a teacher-forced forward
        # runs it inside. Either way: vision, then the rest of the first call, then decoding.
        vision = sum(vision_ms)
        first = calls[0] if calls else total
        prefill = first - vision if forced is not None else first
        clock.ms.update(vision=vision, prefill=prefill, decode=max(0.0, total - vision - prefill))
        segs = [j for j, t in enumerate(generated) if t == self.tokens.seg]
        cached = cache.get_seq_length() - ids.shape[1]
        if segs and segs[-1] >= cached:
            tail = sequence[ids.shape[1] + cached : ids.shape[1] + segs[-1] + 1][None]
            self.model(input_ids=tail, cache=cache, use_cache=True)
        report("decode", self.tokenizer.decode(generated, skip_special_tokens=True))
        return {"generated": generated, "cache": cache, "sequence": sequence}

    # ------------------------------------------------------------------ phase 2 and after

    def _mask_logits(self, path, state, ids, pre, seg_idx) -> torch.Tensor:
        n = pre.num_tokens
        if not seg_idx:
            return torch.zeros(0, n, device=self.device)
        attn = self.loaded.attn_implementation
        if path == "fast":
            return fast_mask_logits(
                self.model,
                self.classifier,
                state["cache"],
                seg_idx,
                state["delta"],
                self.tokens.mask,
                state["features"],
                attn,
            )
        return reference_mask_logits(
            self.model,
            self.classifier,
            state["cache"],
            state["sequence"],
            seg_idx,
            pre.pixel_values,
            pre.grid_thw,
            self.tokens.mask,
            self.tokens.image_pad,
            attn,
        )

    def _postprocess(self, image: np.ndarray, logits: torch.Tensor, pre: Preprocessed):
        h, w = image.shape[:2]
        gh, gw = pre.merged_hw
        grid_logits = logits.float().reshape(-1, gh, gw)
        full = mask_ops.logits_to_mask(grid_logits, (h, w), self.mask_upsample)
        # One device->host copy for everything the result needs.
        grid_logits_np, full_np = grid_logits.cpu().numpy(), full.cpu().numpy()
        full_masks = [np.ascontiguousarray(m, dtype=np.uint8) for m in full_np]
        if self.refiner is not None:
            full_masks = self.refiner.refine(image, full_masks)
        instances = []
        for k, mask in enumerate(full_masks):
            lg = grid_logits_np[k].astype(np.float32)
            grid = (lg > 0).astype(np.uint8)
            instances.append(
                SegInstance(
                    grid=grid,
                    logits=lg,
                    mask=mask,
                    bbox=mask_ops.mask_bbox(mask),
                    area=mask_ops.mask_area(mask),
                    score=mask_ops.grid_score(lg, grid),
                )
            )
        return instances


def _cache_of(output):
    """transformers 5.x renamed ``past_key_values`` to ``cache``; accept both spellings."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _time_module(module: torch.nn.Module, sink: list[float]) -> list:
    """Record the wall time of each forward call of ``module`` into ``sink`` (ms)."""
    started: list[float] = []

    def pre(*_):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started.append(_now())

    def post(*_):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sink.append((_now() - started.pop()) * 1000.0)

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
