"""The supported dependency ranges are stated once and said the same everywhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from stamp_ros.engine.compat import TRANSFORMERS_SUPPORTED

REPO = Path(__file__).resolve().parents[1]


def _setup_requires() -> dict[str, Requirement]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {Requirement(r).name: Requirement(r) for r in ast.literal_eval(node.value)}
    raise AssertionError("setup.py has no install_requires")


def _requirements_txt() -> dict[str, Requirement]:
    reqs = {}
    for line in (REPO / "requirements" / "python.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[req.name] = req
    return reqs


def test_transformers_range_is_the_same_everywhere():
    supported = SpecifierSet(TRANSFORMERS_SUPPORTED)
    assert _setup_requires()["transformers"].specifier == supported
    assert _requirements_txt()["transformers"].specifier == supported
    # The GPU benchmark script checks the environment against the same constant.
    run_sh = (REPO / "bench" / "gpu" / "run.sh").read_text()
    assert "TRANSFORMERS_SUPPORTED" in run_sh and not re.search(r"Version\(\"5\.\d+", run_sh)
    # CI tests the oldest supported release (scripts/setup-oldest, run by scripts/test).
    oldest = min(Version(s.version) for s in supported if s.operator == ">=")
    script = (REPO / "scripts" / "setup-oldest").read_text()
    found = re.search(r"^OLDEST_TRANSFORMERS=(\S+)$", script, re.MULTILINE)
    assert found and Version(found.group(1)) == oldest
    assert "scripts/setup-oldest" in (REPO / "scripts" / "test").read_text()


def test_setup_py_admits_what_ci_installs():
    """Every engine requirement of setup.py is one CI's pinned environment satisfies."""
    ci = _requirements_txt()
    for name, req in _setup_requires().items():
        assert name in ci, f"{name} is required by setup.py but not installed by CI"
        pinned = [s.version for s in ci[name].specifier if s.operator == "=="]
        for version in pinned:
            assert version in req.specifier, (name, version, str(req.specifier))
