"""The STAMP inference engine: torch + transformers only, never rclpy.

The node, the CLI and the benchmarks all go through :class:`StampSegmenter`, so an offline
result and a ROS result for the same image and query are the same masks.
"""

from stamp_ros.engine.errors import (
    CheckpointError,
    EngineError,
    InferenceCancelled,
    InputError,
)
from stamp_ros.engine.result import SegInstance, StampResult

__all__ = [
    "CheckpointError",
    "EngineError",
    "InferenceCancelled",
    "InputError",
    "SegInstance",
    "StampResult",
]
