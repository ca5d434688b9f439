"""The model in its own process: the node keeps everything ROS, the inference process the model.

No rclpy and no torch on the node's side of this package: :class:`InferenceProcess` (proxy.py)
is the node-side stand-in for :class:`stamp_ros.engine.segmenter.StampSegmenter` (same
``segment`` / ``warmup`` / ``history_answer`` API, same :class:`StampResult`), backed by a child
process (process.py) that owns the segmenter, the SAM refiner, the prefix cache and every
tensor. Frames and masks travel through a ring of shared-memory slots (slots.py); only small
descriptors go over the pipe (protocol.py). :class:`InferencePool` (pool.py) runs one process
per device with the CPU thread budget. A process that dies is restarted and every request it
owed is answered with an :class:`InferenceProcessDied` error (errors.py).

Which request runs where is :mod:`~stamp_ros.inference.scheduler`'s business: the node's
request queue (bounded by ``max_pending``) and one consumer thread per inference process (least
busy first, continuous cameras pinned).

The offline CLI and ``stamp-ros bag`` keep running the engine in their own process: the API is
the same either way.

May import: :mod:`stamp_ros.engine` (its error, result and default types on the node's side;
the segmenter only in the child). Never rclpy or a message module (import-linter,
``.importlinter``).
"""

from stamp_ros.inference.errors import InferenceProcessDied, describe_failure, exit_reason
from stamp_ros.inference.protocol import LoadSpec

__all__ = [
    "InferencePool",
    "InferenceProcess",
    "InferenceProcessDied",
    "LoadSpec",
    "describe_failure",
    "exit_reason",
    "thread_budget",
]

_LAZY = {
    "InferencePool": "stamp_ros.inference.pool",
    "thread_budget": "stamp_ros.inference.pool",
    "InferenceProcess": "stamp_ros.inference.proxy",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stamp_ros.inference' has no attribute {name!r}")
