"""A test hook for failure handling, off unless STAMP_ROS_FAULT_INJECTION=1.

With it on, a query containing one of these markers fails inside the inference process when
the request reaches the mask stage (after decoding), so the fault tests exercise the real
recovery paths:

* ``[[raise]]``: a RuntimeError (an error result, the process keeps serving);
* ``[[oom]]``: a torch.cuda.OutOfMemoryError (the same, with the CUDA cache freed);
* ``[[crash]]``: the process kills itself with SIGKILL (the node answers "inference process
  died: signal 9 ...", restarts it and serves the next request);
* ``[[abort]]``: ``os.abort()`` (SIGABRT, like an assertion in a native extension);
* ``[[exit]]``: ``os._exit(3)`` (an extension calling exit()).
* ``[[hang]]``: the process blocks for good, silent (a deadlocked kernel or driver call): the
  node kills it after ``inference_stall_timeout`` and restarts it.

The process inherits the variable from the node, so setting it for the node is enough.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

Progress = Callable[[str, str], None]

ENABLED = os.environ.get("STAMP_ROS_FAULT_INJECTION") == "1"


def _fail(query: str) -> None:
    if "[[raise]]" in query:
        raise RuntimeError("injected failure in the middle of inference")
    if "[[oom]]" in query:
        import torch

        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    if "[[crash]]" in query:
        os.kill(os.getpid(), signal.SIGKILL)
    if "[[abort]]" in query:
        os.abort()
    if "[[exit]]" in query:
        os._exit(3)
    if "[[hang]]" in query:
        threading.Event().wait()


def inject(query: str, progress: Progress | None) -> Progress | None:
    """The engine progress callback to use for ``query``: ``progress`` itself unless the hook
    is enabled, else a wrapper that raises (or dies of) the fault the query asks for at the
    mask stage."""
    if not ENABLED or "[[" not in query:
        return progress

    def hook(stage: str, text: str) -> None:
        if stage == "mask":
            _fail(query)
        if progress is not None:
            progress(stage, text)

    return hook
