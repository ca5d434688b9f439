"""The supported dependency ranges are stated once and said the same everywhere."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from stamp_ros.engine.compat import TRANSFORMERS_SUPPORTED

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("locks", REPO / "scripts" / "locks.py")
locks = importlib.util.module_from_spec(_spec)
sys.modules["locks"] = locks  # dataclasses look their module up while the class is built
_spec.loader.exec_module(locks)


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
    # CI tests the oldest supported release: the oldest lock holds it (scripts/setup-oldest,
    # run by scripts/test), the Kilted lock the newest the range allowed when it was resolved.
    oldest = min(Version(s.version) for s in supported if s.operator == ">=")
    assert Version(locks.read_lock(locks.lock_path("oldest"))["transformers"]) == oldest
    assert "scripts/setup-oldest" in (REPO / "scripts" / "test").read_text()


def test_setup_py_admits_what_ci_installs():
    """Every engine requirement of setup.py is one CI's locked environments satisfy."""
    for spec in locks.LOCKS:
        pins = locks.read_lock(locks.lock_path(spec.name))
        for name, req in _setup_requires().items():
            assert canonicalize_name(name) in pins, f"{name} (setup.py) missing from {spec.name}"
            assert pins[canonicalize_name(name)] in req.specifier, (spec.name, name, str(req))


@pytest.mark.parametrize("spec", locks.LOCKS, ids=lambda s: s.name)
def test_each_lock_pins_every_declared_requirement_inside_its_range(spec):
    """Editing a range without re-resolving the locks (scripts/update-locks), or a lock by
    hand past its range, fails here: the locks and the declared ranges always agree."""
    pins = locks.read_lock(locks.lock_path(spec.name))  # exact pins only, or it raises
    for req in locks.declared(spec):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is declared but not in the {spec.name} lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{spec.name} lock pins {name}=={pins[name]}, outside the declared {req}")
    # torch's line names a version, never a build (docs/dependencies.md, "torch: GPU or CPU only").
    assert "+" not in pins["torch"]


RAISED_IN_OLDEST = {
    "torch": "CI installs only the pinned torch (a CPU wheel here; older ones are CUDA builds)",
    "safetensors": "the oldest transformers requires a newer one",
    "huggingface-hub": "kernels (in the oldest lock on purpose) requires a newer one",
}


def test_the_oldest_lock_is_the_low_end_of_every_range():
    """Each requirement setup.py declares is in the oldest lock at its range's floor (the floor's
    release series: opencv 4.8 is 4.8.0.76), except those another requirement raises."""
    pins = locks.read_lock(locks.lock_path("oldest"))
    for name, req in _setup_requires().items():
        if canonicalize_name(name) in RAISED_IN_OLDEST:
            continue
        (floor,) = [Version(s.version) for s in req.specifier if s.operator == ">="]
        pinned = Version(pins[canonicalize_name(name)])
        assert pinned.release[:len(floor.release)] == floor.release, (name, str(pinned), str(floor))


def test_setup_installs_from_the_locks_and_resolves_nothing():
    """The setup scripts (docs/setup.md) install locks (exact pins) and never a range file."""
    for script in ("setup", "setup-oldest"):
        text = (REPO / "scripts" / script).read_text()
        assert "scripts/install-lock" in text, script
        assert "pip install" not in text and "requirements/python.txt" not in text, script
    install = (REPO / "scripts" / "install-lock").read_text()
    assert '-r "$LOCK"' in install and "requirements/locks/$NAME.txt" in install
    for spec in locks.LOCKS:
        assert locks.lock_path(spec.name).is_file(), spec.name
