#!/usr/bin/env python3
"""Regenerate config/stamp.yaml and the README parameter table from stamp_ros/ros/params.py.

The tests check both against the table, so run this after adding or changing a parameter.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stamp_ros.ros.params import PARAMS  # noqa: E402

HEADER = """\
# stamp_ros node parameters with their defaults (see README, 'Parameters').
# Parameters marked [reload] are read when the model loads: change them while the node is
# inactive (lifecycle deactivate -> set -> activate), or here before launch.
/**:
  ros__parameters:
"""


def yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list)):
        return json.dumps(value)
    return repr(value)


def main() -> None:
    lines = [HEADER.rstrip("\n")]
    for p in PARAMS:
        lines.append(f"    # {p.description}{' [reload]' if p.reload else ''}")
        lines.append(f"    {p.name}: {yaml_value(p.default)}")
    (ROOT / "config" / "stamp.yaml").write_text("\n".join(lines) + "\n")

    rows = ["| parameter | default | reload | meaning |", "|---|---|---|---|"]
    for p in PARAMS:
        rows.append(f"| `{p.name}` | `{yaml_value(p.default)}` | {'yes' if p.reload else ''} "
                    f"| {p.description} |")
    readme = (ROOT / "README.md").read_text()
    table = re.compile(r"\| parameter \| default \| reload \| meaning \|\n(\|.*\|\n)+")
    (ROOT / "README.md").write_text(table.sub("\n".join(rows) + "\n", readme, count=1))


if __name__ == "__main__":
    main()
