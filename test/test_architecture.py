"""The layout docs/architecture.md describes is the one that exists.

The import layers themselves are import-linter's job (``.importlinter``, run by scripts/test);
these tests hold what it cannot see: the generated interfaces (``stamp_ros.msg`` and friends
live in the installed half of the package, outside the graph it builds), the package root, the
subpackage docstrings and the size of the ROS adapters.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stamp_ros"
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
ROS_FREE = ("engine", "inference", "tracking", "spatial", "render", "diagnosis", "msgs",
            "pipeline", "bag", "eval")
GENERATED = ("stamp_ros.msg", "stamp_ros.srv", "stamp_ros.action")
ROS_MODULE_LINES = 400


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (functions included), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_the_package_root_holds_only_its_init():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py"], f"modules at the package root: {modules}"


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_subpackage_says_what_it_holds_and_may_import(name):
    doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
    assert doc and len(doc.splitlines()) >= 3, f"stamp_ros.{name} has no docstring"
    assert "import" in doc.lower(), f"stamp_ros.{name}'s docstring does not say what it imports"
    architecture = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert f"stamp_ros/{name}/" in architecture, f"docs/architecture.md lacks stamp_ros/{name}/"


@pytest.mark.parametrize("name", ROS_FREE)
def test_ros_free_packages_never_import_the_generated_interfaces(name):
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
                 for path in sorted((PACKAGE / name).rglob("*.py"))
                 for line, module in imported_modules(path)
                 if any(module == g or module.startswith(g + ".") for g in GENERATED)]
    assert not offenders, "\n".join(offenders)


def test_every_ros_adapter_module_stays_readable():
    long = {p.name: n for p in (PACKAGE / "ros").glob("*.py")
            if (n := len(p.read_text().splitlines())) > ROS_MODULE_LINES}
    assert not long, f"stamp_ros/ros modules over {ROS_MODULE_LINES} lines: {long}"
