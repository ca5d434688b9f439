"""The manual (docs/, mkdocs.yml) and the README front page against the code they describe.

* the parameter table of docs/parameters.md and config/stamp.yaml are exactly what
  scripts/render_params.py makes of the node's parameter table (names, defaults, reload marks);
* every topic, service and action the node creates is named on docs/interface.md. The names are
  read from the node's source (stamp_ros/ros/*.py) with ``ast``, without starting a node: the
  literal names passed to ``create_subscription`` / ``create_publisher`` / ``create_service`` /
  ``ActionServer`` and to the node's ``_subscribe`` / ``_publisher`` wrappers, plus the
  per-camera outputs of ``OUTPUTS`` (stamp_ros/ros/camera.py); a name the parser cannot resolve
  fails the test, so a new way of creating a topic cannot slip past it;
* every field of msg/*.msg, srv/*.srv and action/*.action is documented on docs/interface.md
  (a message's fields in its own section);
* the README stays a front page, and its links into docs/ reach a page and an anchor that exist;
* ``mkdocs build --strict`` passes (a broken link or anchor fails it; scripts/test runs it too).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    from stamp_ros.pipeline.params import PARAMS
except ImportError:  # the table's former home, until every module has moved
    from stamp_ros.ros.params import PARAMS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
INTERFACE = DOCS / "interface.md"
ROS_SOURCES = REPO / "stamp_ros" / "ros"
README_MAX_LINES = 250


def _render_params():
    spec = importlib.util.spec_from_file_location("render_params",
                                                  REPO / "scripts" / "render_params.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- parameters
def test_parameter_table_and_config_are_what_render_params_makes_of_the_code():
    stale = _render_params().stale()
    assert not stale, (f"{[str(p.relative_to(REPO)) for p in stale]} differ from the node's "
                       "parameter table: run scripts/render_params.py")


def _documented_parameters() -> dict[str, tuple[object, bool]]:
    render = _render_params()
    text = (DOCS / "parameters.md").read_text()
    assert text.count(render.BEGIN) == 1 and text.count(render.END) == 1, "table markers"
    table = text.split(render.BEGIN, 1)[1].split(render.END, 1)[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        m = re.fullmatch(r"\| `(\w+)` \| `(.*)` \| (yes|) \| .+ \|", line)
        assert m, f"unreadable row of docs/parameters.md: {line}"
        rows[m.group(1)] = (yaml.safe_load(m.group(2)), m.group(3) == "yes")
    return rows


def test_docs_parameter_table_lists_every_parameter_with_default_and_reload():
    rows = _documented_parameters()
    assert list(rows) == [p.name for p in PARAMS], "names or their order differ from the code"
    for p in PARAMS:
        assert rows[p.name] == (p.default, p.reload), p.name


def test_config_yaml_lists_every_parameter_with_its_default_and_reload_mark():
    text = (REPO / "config" / "stamp.yaml").read_text()
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert list(params) == [p.name for p in PARAMS]
    lines = text.splitlines()
    for p in PARAMS:
        assert params[p.name] == p.default, p.name
        comment = lines[lines.index(f"    {p.name}: {_render_params().yaml_value(p.default)}") - 1]
        assert comment.endswith("[reload]") == p.reload, p.name


# ---------------------------------------------------------------------------- topics
CREATORS = {"create_subscription": 1, "create_publisher": 1, "create_service": 1,
            "ActionServer": 2}
"""rclpy calls that create a topic, service or action -> position of the name argument."""
WRAPPERS = {"_subscribe": 1, "_publisher": 1}
"""The node's own wrappers around them (StampNode._subscribe(camera, role, ...) and
StampNode._publisher(msg_type, topic, ...)) -> position of the name argument."""
NOT_THE_NODE = {"doctor_probe.py"}
"""Modules under stamp_ros/ros whose entities belong to another node (stamp-ros doctor's)."""
EXPECTED = {"image", "image/compressed", "query", "depth", "camera_info", "~/result", "~/tracks",
            "~/segment", "~/track", "~/self_test", "/diagnostics"}
"""Names the parser must find, so that a parser gone blind fails instead of passing."""


def _outputs() -> list[str]:
    """The per-camera outputs: ``OUTPUTS`` in stamp_ros/ros/camera.py."""
    tree = ast.parse((ROS_SOURCES / "camera.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "OUTPUTS":
            return [f"~/{elt.value}" for elt in node.value.elts]
    raise AssertionError("OUTPUTS not found in stamp_ros/ros/camera.py")


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _strings(expr: ast.AST) -> list[str] | None:
    """The strings an assigned value can be: a literal, or either branch of ``a if c else b``."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, ast.IfExp):
        body, orelse = _strings(expr.body), _strings(expr.orelse)
        return None if body is None or orelse is None else body + orelse
    return None


def _resolve(arg: ast.AST, function: ast.FunctionDef | None, outputs: list[str]
             ) -> list[str] | None:
    """The names ``arg`` can take; [] for a parameter of the enclosing function (resolved at
    the wrapper's call sites); None when it cannot be resolved."""
    params = {a.arg for a in function.args.args} if function else set()
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute):
        if arg.func.attr == "output_topic":
            return outputs
        if arg.func.attr == "topic" and arg.args:
            inner = arg.args[0]
            if isinstance(inner, ast.Name) and inner.id in params:
                return []
            return _resolve(inner, function, outputs)
    if isinstance(arg, ast.Name):
        if arg.id in params:
            return []
        values = [n.value for n in ast.walk(function) if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == arg.id for t in n.targets)] if function else []
        found = [_strings(v) for v in values]
        if not found or None in found:
            return None
        return [s for strings in found for s in strings]
    return None


def node_entity_names() -> set[str]:
    """Every topic, service and action name the node creates, read from its source."""
    outputs = _outputs()
    names: set[str] = set()
    unresolved = []
    for path in sorted(ROS_SOURCES.glob("*.py")):
        if path.name in NOT_THE_NODE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            for call in ast.walk(function):
                if not isinstance(call, ast.Call):
                    continue
                name = _call_name(call)
                position = CREATORS.get(name, WRAPPERS.get(name))
                if position is None or len(call.args) <= position:
                    continue
                found = _resolve(call.args[position], function, outputs)
                if found is None:
                    unresolved.append(f"{path.name}:{call.lineno} {ast.unparse(call)[:80]}")
                else:
                    names.update(found)
    assert not unresolved, ("topic names this test cannot read from the code (extend "
                            f"test_docs._resolve): {unresolved}")
    return names


def test_interface_page_names_every_topic_service_and_action_the_node_creates():
    names = node_entity_names()
    assert names >= EXPECTED, f"the source parser missed {EXPECTED - names}"
    page = INTERFACE.read_text()
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"docs/interface.md does not name {missing}"


# ---------------------------------------------------------------------------- messages
def interface_fields(path: Path) -> list[str]:
    """Field (and constant) names of a .msg/.srv/.action file, every part."""
    fields = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line == "---":
            continue
        name = line.split()[1]
        fields.append(name.split("=", 1)[0])
    return fields


def _section(page: str, heading: str) -> str:
    m = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", page, re.S | re.M)
    assert m, f"docs/interface.md has no section '{heading}'"
    return m.group(1)


def interface_files() -> list[Path]:
    return sorted([*REPO.glob("msg/*.msg"), *REPO.glob("srv/*.srv"),
                   *REPO.glob("action/*.action")])


def test_every_interface_file_is_found():
    names = {p.name for p in interface_files()}
    assert {"Segmentation.msg", "Instance.msg", "Segment.srv", "Track.srv",
            "Segment.action"} <= names


@pytest.mark.parametrize("path", interface_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_interface_page_documents_every_field(path: Path):
    page = INTERFACE.read_text()
    # A message's fields are documented in its own section; services and actions in the
    # topic table and the "Segment service and action" section.
    text = _section(page, path.stem) if path.suffix == ".msg" else page
    missing = [f for f in interface_fields(path) if f"`{f}`" not in text]
    assert not missing, f"docs/interface.md does not document {path.name}: {missing}"


# ---------------------------------------------------------------------------- README, build
def _anchors(page: Path) -> set[str]:
    import markdown

    html = markdown.markdown(page.read_text(),
                             extensions=["toc", "tables", "fenced_code", "admonition"])
    return set(re.findall(r'\bid="([^"]+)"', html))


def test_readme_is_a_front_page_whose_links_into_docs_resolve():
    text = README.read_text()
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines: it is the front page "
                                       f"(at most {README_MAX_LINES}), move detail into docs/")
    assert "scripts/setup && .venv/bin/stamp-ros demo --out-dir out/demo\n" in text
    assert "\nscripts/test\n" in text
    links = re.findall(r"\]\((docs/[^)#\s]*)(?:#([^)\s]+))?\)", text)
    assert len(links) >= 10, "the README's map of docs/ is gone"
    broken = []
    for target, anchor in links:
        path = REPO / target
        if not path.is_file():
            broken.append(target)
        elif anchor and anchor not in _anchors(path):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"README.md links to what does not exist: {broken}"
    linked = {Path(t).name for t, _ in links}
    unlisted = sorted(p.name for p in DOCS.glob("*.md") if p.name not in linked)
    assert not unlisted, f"README.md's map of docs/ lacks {unlisted}"


def test_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed in this venv")
    # Not --quiet: it hides the warnings strict mode counts, and a broken link would pass.
    out = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
