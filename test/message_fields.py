"""Any message as a flat ``{"a.b[0].c": value}`` dict: compares an rclpy message with a rosbags
one (the node's and the bag's builds of the same message) field by field."""

from __future__ import annotations

from typing import Any

import numpy as np


def flat_fields(msg: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of ``msg`` (rclpy: ``get_fields_and_field_types``; rosbags: dataclass
    fields), nested messages and message lists flattened, arrays as lists."""
    fields = (msg.get_fields_and_field_types() if hasattr(msg, "get_fields_and_field_types")
              else {f: None for f in msg.__dataclass_fields__ if not f.startswith("__")})
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(msg, name)
        if isinstance(value, list):
            for i, item in enumerate(value):
                out.update(flat_fields(item, f"{prefix}{name}[{i}]."))
        elif hasattr(value, "__slots__") or hasattr(value, "__dataclass_fields__"):
            out.update(flat_fields(value, f"{prefix}{name}."))
        elif isinstance(value, str | bool | int | float):
            out[prefix + name] = value
        else:
            out[prefix + name] = np.asarray(value).tolist()
    return out
