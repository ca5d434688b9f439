"""The frame-prefix cache: reuse one frame's vision features and KV for every query about it.

The fast path prefills a prompt in two chunks: the frame prefix (``system + history +
<|vision_start|> image <|vision_end|>``) and then the query with whatever follows. Causal
attention makes the prefix's KV independent of what follows, so a later query on the same frame
(same prompt prefix, same preprocessing) can start from it: no preprocessing, no vision tower and
a prefill of only the query's ~20 tokens. Hit or miss, the arithmetic is the same two chunks, so
results never depend on caching.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch

from stamp_ros.engine.preprocess import Preprocessed

__all__ = ["PrefixCache", "PrefixEntry", "PrefixPlan", "same_frame"]


@dataclass
class PrefixEntry:
    """KV of ``system + history + <|vision_start|> image <|vision_end|>`` for one frame."""

    prefix_ids: tuple[int, ...]
    settings: tuple
    frame_key: Hashable | None
    image: np.ndarray | None
    """A private copy of the frame when the caller gave no ``frame_key`` (content identity)."""
    pre: Preprocessed
    features: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    delta: int


@dataclass
class PrefixPlan:
    """Where this request's frame prefix ends and how it is recognised, plus the cached entry.

    Made by the preprocessing phase of a fast-path request; the prefill phase reads ``end`` to
    split the prompt and, on a miss, stores what it computed under ``prefix_ids``/``settings``.
    """

    end: int
    """Prompt index right after ``<|vision_end|>``: the first token of the second chunk."""
    prefix_ids: tuple[int, ...]
    settings: tuple
    """Preprocessing choices the features depend on (mode, min/max pixels)."""
    frame_key: Hashable | None
    image: np.ndarray
    entry: PrefixEntry | None = None
    """The cached prefix for this frame, or None on a miss (or with the cache off)."""


def same_frame(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact content equality, with a cheap strided probe first (different frames exit early)."""
    if a.shape != b.shape:
        return False
    if not np.array_equal(a[::17, ::13], b[::17, ::13]):
        return False
    return bool(np.array_equal(a, b))


class PrefixCache:
    """The ``size`` most recently used frame prefixes (LRU; size 0 keeps nothing).

    Not thread-safe on its own: the segmenter only touches it under its engine lock.
    """

    def __init__(self, size: int):
        if size < 0:
            raise ValueError("prefix_cache must be >= 0")
        self.size = size
        self._entries: list[PrefixEntry] = []  # most recently used first

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry (frees their KV and vision features)."""
        self._entries.clear()

    def lookup(self, plan: PrefixPlan) -> PrefixEntry | None:
        """The entry for ``plan``'s prompt prefix and frame, moved to the front; None if absent.

        A frame is matched by its ``frame_key`` when the caller named one, else by content.
        """
        for i, entry in enumerate(self._entries):
            if entry.prefix_ids != plan.prefix_ids or entry.settings != plan.settings:
                continue
            if plan.frame_key is not None:
                hit = entry.frame_key == plan.frame_key
            else:
                hit = entry.frame_key is None and same_frame(entry.image, plan.image)
            if hit:
                self._entries.insert(0, self._entries.pop(i))  # most recently used first
                return entry
        return None

    def remember(
        self,
        plan: PrefixPlan,
        pre: Preprocessed,
        features: torch.Tensor,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        delta: int,
        device: torch.device,
    ) -> PrefixEntry:
        """Keep a just-computed frame prefix (its KV tensors are never mutated afterwards)."""
        meta = Preprocessed(
            pixel_values=torch.empty(0, device=device),  # not needed on a hit
            grid_thw=pre.grid_thw,
            resized_hw=pre.resized_hw,
            merge_size=pre.merge_size,
        )
        entry = PrefixEntry(
            prefix_ids=plan.prefix_ids,
            settings=plan.settings,
            frame_key=plan.frame_key,
            image=None if plan.frame_key is not None else np.array(plan.image, copy=True),
            pre=meta,
            features=features,
            kv=kv,
            delta=delta,
        )
        self._entries.insert(0, entry)
        del self._entries[self.size :]
        return entry
