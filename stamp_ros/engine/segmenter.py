"""StampSegmenter: image + query (+ text history) -> answer text and one mask per ``<|seg|>``.

Phase 1 is ordinary greedy chat decoding; phase 2 (``maskpass``) turns each ``<|seg|>`` of the
answer into a merged-patch grid. Two paths give the same masks:

* ``path="fast"`` (default): our own prefill/decode loop, so the vision features are computed
  once and reused, stages are timed separately, progress is reported per token and cancellation
  is polled; all mask passes of an answer run batched in one forward.
* ``path="reference"``: transformers' ``generate`` followed by the plain per-``<|seg|>`` mask pass
  of the spec. Slow on purpose; the tests hold the fast path to it.

This module runs one request through its phases and owns the fast answer loop. Its helpers live
next to it: ``prefix_cache`` (frame prefixes reused across queries), ``decoder_pool`` and
``decode`` (static-cache / CUDA-graph decoding), ``reference`` (the reference answer),
``maskpass`` (phase 2 and :class:`AnswerState`, what phase 1 hands it), ``masks`` (grids to
full-resolution masks) and ``timing`` (the per-stage clock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from stamp_ros.engine import masks as mask_ops
from stamp_ros.engine.checkpoint import LoadedStamp, load_stamp
from stamp_ros.engine.compat import cache_kwargs, rope_index
from stamp_ros.engine.decode import DECODE_MODES, StaticDecoder
from stamp_ros.engine.decoder_pool import DecoderPool
from stamp_ros.engine.defaults import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    DEFAULT_MODEL,
)
from stamp_ros.engine.errors import InferenceCancelled, InputError
from stamp_ros.engine.maskpass import AnswerState, fast_mask_logits, reference_mask_logits
from stamp_ros.engine.prefix_cache import PrefixCache, PrefixPlan
from stamp_ros.engine.preprocess import (
    Preprocessed,
    VisionGeometry,
    preprocess_pil,
    preprocess_torch,
    smart_resize,
    validate_image,
)
from stamp_ros.engine.prompt import DEFAULT_SYSTEM_PROMPT, build_messages, encode_prompt
from stamp_ros.engine.reference import reference_answer
from stamp_ros.engine.result import SegInstance, StampResult
from stamp_ros.engine.timing import StageClock, now

logger = logging.getLogger("stamp_ros.engine")

Progress = Callable[[str, str], None]
CancelCheck = Callable[[], bool]

PATHS = ("fast", "reference")
PREPROCESSORS = ("auto", "pil", "torch")
_CANCEL_EVERY = 4  # decode steps between cancel polls


class StampSegmenter:
    """The inference engine used by the ROS node, the CLI and the benchmarks."""

    def __init__(
        self,
        loaded: LoadedStamp,
        *,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
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
        self._prefixes = PrefixCache(prefix_cache)
        self.decode_mode = decode_mode
        if decode_mode != "eager" and loaded.attn_implementation == "flash_attention_2":
            logger.warning("decode_mode=%s needs sdpa or eager attention; decoding eagerly",
                           decode_mode)
            self.decode_mode = "eager"
        if decode_mode == "cuda_graph" and self.device.type != "cuda":
            # Same maths without the graph; keeps CPU runs of a GPU configuration working.
            self.decode_mode = "static"
        self._decoders = DecoderPool(
            self.model, loaded.attn_implementation, use_graph=self.decode_mode == "cuda_graph"
        )
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

    @property
    def prefix_cache_size(self) -> int:
        """How many frame prefixes the cache keeps (0: off)."""
        return self._prefixes.size

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
        image_in_first_turn: bool = False,
    ) -> StampResult:
        """Answer ``query`` about ``image`` (HxWx3 uint8 RGB) and predict a mask per ``<|seg|>``.

        ``history``: earlier (user, assistant) turns, oldest first; the image goes into the
        current turn, or with ``image_in_first_turn`` into the first one (see
        :mod:`stamp_ros.engine.prompt`; a conversation pinned to one frame uses the latter so
        that its later turns reuse the cached frame prefix).

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
        messages = build_messages(query, history, self.system_prompt,
                                  image_in_first_turn=image_in_first_turn)
        forced = self._check_forced(forced_answer_ids)
        report = progress or (lambda stage, text: None)
        cancelled = should_cancel or (lambda: False)
        with self._lock, torch.inference_mode():
            return self._run(image, messages, forced, path, report, cancelled, frame_key)

    def history_answer(self, result: StampResult) -> str:
        """``result``'s answer as the assistant turn of a later prompt: ``<|seg|>`` tokens kept
        (STAMP's answers carry them, and a later turn should see how many objects were
        segmented), the end-of-turn token dropped."""
        ids = [t for t in result.token_ids if t != self.tokenizer.eos_token_id]
        return self.tokenizer.decode(ids, skip_special_tokens=False).replace(
            self.tokenizer.pad_token or "\0", "").strip()

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
            t0 = now()
            self._run(image, messages, None, "fast", quiet, never, None, max_new_tokens=2)
            times["decode_run_ms"] = (now() - t0) * 1000.0
            t0 = now()
            self._run(image, messages, forced, "fast", quiet, never, None)
            times["mask_run_ms"] = (now() - t0) * 1000.0
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
        clock = StageClock(self.device)
        limit = max_new_tokens or self.max_new_tokens

        def start_stage(stage: str, text: str = "") -> None:
            if cancelled():
                raise InferenceCancelled(f"cancelled before {stage}")
            report(stage, text)

        start_stage("preprocess")
        plan: PrefixPlan | None = None
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
                plan = PrefixPlan(
                    end=end,
                    prefix_ids=tuple(prompt[:end]),
                    settings=(self._preprocess_kind(), self.min_pixels, self.max_pixels),
                    frame_key=frame_key,
                    image=image,
                )
                if self._prefixes.size > 0:
                    plan.entry = self._prefixes.lookup(plan)
            if plan is not None and plan.entry is not None:
                pre = plan.entry.pre
            else:
                pre = self._preprocess(image)
        if plan is not None:
            state = self._phase1_fast(
                ids, pre, forced, clock, start_stage, report, cancelled, limit, plan
            )
        else:
            start_stage("prefill")
            state = reference_answer(self.loaded, ids, pre, forced, clock, limit)
            report("decode", self.tokenizer.decode(state.generated, skip_special_tokens=True))
        generated = state.generated
        text = self.tokenizer.decode(generated, skip_special_tokens=True).strip()
        clock.ms["generate"] = sum(clock.ms.get(k, 0.0) for k in ("vision", "prefill", "decode"))
        # Only <|seg|> tokens the model produced count, never ones typed into the prompt.
        seg_idx = [len(prompt) + j for j, t in enumerate(generated) if t == self.tokens.seg]

        start_stage("mask", text)
        with clock.stage("mask"):
            logits = self._mask_logits(path, state, ids, pre, seg_idx)
        start_stage("postprocess", text)
        with clock.stage("postprocess"):
            instances = self._postprocess(image, logits, pre)
        clock.ms["total"] = (now() - clock.start) * 1000.0
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
        positions, delta = rope_index(self.model, ids, self.tokens.image_pad, pre.grid_thw)
        cache = DynamicCache(config=self.model.config)
        hidden = lm(
            inputs_embeds=embeds, position_ids=positions, use_cache=True, **cache_kwargs(lm, cache)
        ).last_hidden_state
        return cache, int(delta.reshape(-1)[0]), hidden[:, -1]

    def _extend(self, cache, tokens: list[int], delta: int) -> torch.Tensor:
        """Feed ``tokens`` after the cached ones (text positions); return the last hidden state."""
        start = cache.get_seq_length()
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(tokens), device=self.device) + delta
        lm = self.model.model.language_model
        hidden = lm(
            input_ids=ids,
            position_ids=positions.view(1, 1, -1).expand(3, 1, -1),
            use_cache=True,
            **cache_kwargs(lm, cache),
        ).last_hidden_state
        return hidden[:, -1]

    def _phase1_fast(
        self,
        ids: torch.Tensor,
        pre: Preprocessed,
        forced: list[int] | None,
        clock: StageClock,
        start_stage: Callable[[str], None],
        report: Progress,
        cancelled: CancelCheck,
        limit: int,
        plan: PrefixPlan,
    ) -> AnswerState:
        entry = plan.entry
        start_stage("vision")
        with clock.stage("vision"):
            if entry is not None:
                features = entry.features
            else:
                out = self.model.model.get_image_features(pre.pixel_values, pre.grid_thw)
                features = torch.cat(out.pooler_output)
        start_stage("prefill")
        with clock.stage("prefill"):
            full = (
                ids
                if not forced
                else torch.cat(
                    [ids, torch.tensor([forced], dtype=torch.long, device=self.device)], dim=1
                )
            )
            # Always prefill in two chunks (frame prefix, then query + forced answer), so a
            # prefix-cache hit, a miss and a run with the cache off do exactly the same
            # arithmetic: results never depend on caching. Costs one short extra forward.
            end = plan.end
            if entry is None:
                cache, delta, _ = self._prefill(full[:, :end], pre, features)
                if self._prefixes.size > 0:
                    kv = [(k, v) for k, v, *_ in cache]
                    self._prefixes.remember(plan, pre, features, kv, delta, self.device)
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
        return AnswerState(generated=generated, cache=cache, delta=delta, features=features)

    def _decode_static(self, cache, delta, last_hidden, report, cancelled, limit):
        """Greedy decoding on a static cache (and a CUDA graph); same tokens as ``_decode``."""
        stops = set(self.tokens.stop_ids)
        token = int(self.model.lm_head(last_hidden).argmax(-1)[0])
        # Sized by max_new_tokens, not by this call's limit, so the warm-up's graph is reused.
        dec = self._decoders.get(cache.get_seq_length() + max(limit, self.max_new_tokens) + 1)
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

    # ------------------------------------------------------------------ phase 2 and after

    def _mask_logits(
        self,
        path: str,
        state: AnswerState,
        ids: torch.Tensor,
        pre: Preprocessed,
        seg_idx: list[int],
    ) -> torch.Tensor:
        n = pre.num_tokens
        if not seg_idx:
            return torch.zeros(0, n, device=self.device)
        attn = self.loaded.attn_implementation
        if path == "fast":
            return fast_mask_logits(
                self.model,
                self.classifier,
                state.cache,
                seg_idx,
                state.delta,
                self.tokens.mask,
                state.features,
                attn,
            )
        return reference_mask_logits(
            self.model,
            self.classifier,
            state.cache,
            state.sequence,
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

