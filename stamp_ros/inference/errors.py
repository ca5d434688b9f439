"""How failures of the inference process read to a caller: one line each, never a traceback.

Plain Python (no torch): the node side formats these without importing the engine.
"""

from __future__ import annotations

import signal

from stamp_ros.engine.errors import EngineError


class InferenceProcessDied(EngineError):
    """The inference process ended while it owed this request an answer (a crash, a kill, an
    abort, the OOM killer, or a stop). The request was not answered by the model; the message
    names the cause and whether the process is being restarted."""


def describe_failure(exc: BaseException) -> str:
    """One line for an unexpected engine failure; CUDA OOM says the node keeps serving."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "out of memory" in str(exc).lower():
        return f"CUDA out of memory: {text[:300]} (request dropped, the node keeps serving)"
    return f"{type(exc).__name__}: {text[:300]}"


def exit_reason(returncode: int | None) -> str:
    """``Popen.returncode`` in words: ``signal 9 (SIGKILL)``, ``exit code 3``."""
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"
