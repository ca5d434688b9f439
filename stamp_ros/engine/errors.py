"""Exception types that callers (node, CLI) map to error results and exit codes."""


class EngineError(RuntimeError):
    """Base class: anything the engine reports as a failed request rather than a crash."""


class CheckpointError(EngineError):
    """The model could not be loaded, or it is not a STAMP checkpoint."""


class InputError(EngineError, ValueError):
    """The request itself is unusable (empty query, malformed image)."""


class InferenceCancelled(EngineError):
    """A caller's cancel check returned True between two stages."""
