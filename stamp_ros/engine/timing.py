"""Stage timing for the engine: wall clock per stage, honest on CUDA.

GPU work is asynchronous, so a stopwatch around a forward call would only time the kernel
launches; both helpers synchronise the device at every boundary they measure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["StageClock", "now", "time_module_calls"]


def now() -> float:
    """Monotonic seconds for measuring durations (``time.perf_counter``)."""
    return time.perf_counter()


class StageClock:
    """Milliseconds per named stage of one request; synchronises CUDA so GPU stages count."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.ms: dict[str, float] = {}
        self.start = now()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to stage ``name``."""
        self.sync()
        t0 = now()
        try:
            yield
        finally:
            self.sync()
            self.ms[name] = self.ms.get(name, 0.0) + (now() - t0) * 1000.0


def time_module_calls(module: torch.nn.Module, sink: list[float]) -> list:
    """Record the wall time of each forward call of ``module`` into ``sink`` (ms).

    For code we do not drive step by step (transformers' ``generate``): hooks are the only way
    to split its time into vision, prefill and decoding. Returns the hook handles to remove.
    """
    started: list[float] = []

    def pre(*_):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started.append(now())

    def post(*_):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sink.append((now() - started.pop()) * 1000.0)

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
