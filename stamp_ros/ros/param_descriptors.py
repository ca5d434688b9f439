"""The node's parameter table as ``rcl_interfaces`` descriptors (what ``ros2 param describe``
shows: the meaning, the allowed values, the range, and whether a change needs a reload)."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from stamp_ros.pipeline.params import Param


def parameter_descriptor(spec: Param) -> ParameterDescriptor:
    """What `ros2 param describe` shows: the meaning, the allowed values and the range."""
    desc = ParameterDescriptor(description=spec.description)
    notes = []
    if spec.choices:
        notes.append(f"one of: {', '.join(map(str, spec.choices))}")
    if spec.reload:
        notes.append("read when the model loads: change it while the node is inactive")
    desc.additional_constraints = "; ".join(notes)
    if spec.min_value is not None or spec.max_value is not None:
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(spec.min_value or 0.0),
                to_value=float(spec.max_value if spec.max_value is not None else 1e9))]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(
                from_value=int(spec.min_value or 0),
                to_value=int(spec.max_value if spec.max_value is not None else 2**31 - 1))]
    return desc
