"""The STAMP inference engine: torch + transformers only, never rclpy.

The node, the CLI and the benchmarks all go through :class:`StampSegmenter`, so an offline
result and a ROS result for the same image and query are the same masks. Generated test
checkpoints are not part of the engine: see :mod:`stamp_ros.testing`.

The heavy names (``StampSegmenter``, ``load_stamp``, ...) are imported lazily so that importing
the error and result types does not pull in torch and transformers.

May import: torch, transformers, safetensors, peft, numpy, OpenCV, PIL; nothing else of
stamp_ros and never rclpy (the bottom layer: import-linter, ``.importlinter``).
"""

from stamp_ros.engine.errors import (
    CheckpointError,
    EngineError,
    InferenceCancelled,
    InputError,
)
from stamp_ros.engine.result import SegInstance, StampResult

_LAZY = {
    "StampSegmenter": "stamp_ros.engine.segmenter",
    "load_stamp": "stamp_ros.engine.checkpoint",
    "LoadedStamp": "stamp_ros.engine.checkpoint",
}

__all__ = [
    "CheckpointError",
    "EngineError",
    "InferenceCancelled",
    "InputError",
    "LoadedStamp",
    "SegInstance",
    "StampResult",
    "StampSegmenter",
    "load_stamp",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stamp_ros.engine' has no attribute {name!r}")
