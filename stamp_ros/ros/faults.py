"""A test hook for the node's failure handling, off unless STAMP_ROS_FAULT_INJECTION=1.

With it on, a query containing ``[[raise]]`` or ``[[oom]]`` fails inside the engine, between
decoding and the mask pass, with a RuntimeError or a torch.cuda.OutOfMemoryError, so the fault
tests exercise the node's real recovery path (error result, CUDA cache freed, keep serving).
"""

from __future__ import annotations

import os
from collections.abc import Callable

Progress = Callable[[str, str], None]

ENABLED = os.environ.get("STAMP_ROS_FAULT_INJECTION") == "1"


def inject(query: str, progress: Progress | None) -> Progress | None:
    """The engine progress callback to use for ``query``: ``progress`` itself unless the hook
    is enabled, else a wrapper that raises the fault the query asks for at the mask stage."""
    if not ENABLED:
        return progress

    def hook(stage: str, text: str) -> None:
        if stage == "mask" and "[[raise]]" in query:
            raise RuntimeError("injected failure in the middle of inference")
        if stage == "mask" and "[[oom]]" in query:
            import torch

            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        if progress is not None:
            progress(stage, text)

    return hook
