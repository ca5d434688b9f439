"""A small pool of :class:`StaticDecoder` objects, one per static-cache capacity bucket.

A static decoder holds a KV buffer sized for its capacity and, with CUDA graphs, a captured
graph; building one costs a capture, so decoders are reused across requests. Only the most
recently used few are kept, because each one pins its buffer in GPU memory.
"""

from __future__ import annotations

from stamp_ros.engine.decode import StaticDecoder, capacity_for

__all__ = ["MAX_STATIC_DECODERS", "DecoderPool"]

MAX_STATIC_DECODERS = 2
"""Capacity buckets kept alive (each holds a KV buffer and a graph)."""


class DecoderPool:
    """Static decoders for one model, by capacity bucket, least recently used dropped first."""

    def __init__(self, model, attn_implementation: str, use_graph: bool,
                 max_decoders: int = MAX_STATIC_DECODERS):
        self.model = model
        self.attn_implementation = attn_implementation
        self.use_graph = use_graph
        self.max_decoders = max_decoders
        self._decoders: dict[int, StaticDecoder] = {}  # insertion order = least recent first

    def __len__(self) -> int:
        return len(self._decoders)

    def get(self, tokens: int) -> StaticDecoder:
        """A decoder whose capacity holds ``tokens`` positions (made on first use)."""
        capacity = capacity_for(tokens)
        dec = self._decoders.pop(capacity, None)
        if dec is None:
            dec = StaticDecoder(
                self.model, capacity, self.attn_implementation, use_graph=self.use_graph
            )
        self._decoders[capacity] = dec  # most recently used last
        while len(self._decoders) > self.max_decoders:
            self._decoders.pop(next(iter(self._decoders)))
        return dec
