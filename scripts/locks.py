"""The dependency locks: resolve them, say what moved, check an environment against one.

usage:
  python scripts/locks.py compile --uv UV [--python X.Y] [--out DIR]   (scripts/update-locks)
  python scripts/locks.py diff OLD_DIR NEW_DIR
  python scripts/locks.py check LOCK [--extras-to FILE]   (with the environment's interpreter)

Ranges say what stamp_ros supports (setup.py, requirements/python.txt, requirements/ros-*.txt);
locks say what CI installs: every package of an environment at one exact version, resolved
once by uv and committed under requirements/locks/. `scripts/setup` installs a lock and checks
the result equals it, so a release upstream never changes what CI runs; `scripts/update-locks`
moves the locks on purpose.

torch stays selectable by build: its lock line is a plain version (``torch==2.13.0``), which
pip satisfies with the CPU build or a CUDA build alike, and the lock holds the dependencies
every build shares (resolved against the CPU build's metadata). A CUDA build brings its own
``nvidia-*``/``triton`` wheels on top; ``check`` accepts exactly those: packages that an
installed locked package requires and the lock does not name.

Only the standard library and ``packaging`` (pip's vendored copy when the environment has
none) are used, so ``check`` runs in any environment, even one being set up.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a fresh venv: pip always carries a copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
LOCK_DIR = REQUIREMENTS / "locks"
LOCK_PYTHON = "3.11"
"""The Python the locks are resolved for: the one CI (and the project's machines) run."""


@dataclass(frozen=True)
class LockSpec:
    """One environment: which declared requirements it holds and how they are resolved."""

    name: str
    inputs: tuple[str, ...]
    """Where its requirements come from: a file under requirements/ (``file:a,b`` = only those
    packages of it), ``setup.py`` (its install_requires) or ``lock:NAME:a,b`` (those packages
    pinned as an earlier lock of the same run pins them)."""
    resolution: str
    """uv's --resolution: "highest" (newest allowed) or "lowest-direct" (each declared
    requirement at the lowest version its range allows; what they need, resolved)."""
    purpose: str


LOCKS = (
    LockSpec("kilted", ("ros-kilted.txt", "python.txt"), "highest",
             "scripts/setup: ROS 2 Kilted wheels + model side + tools (.venv; the whole suite)"),
    LockSpec("jazzy", ("ros-jazzy.txt", "python.txt"), "highest",
             "scripts/setup --distro jazzy: ROS 2 Jazzy wheels + model side + tools "
             "(.venv-jazzy; the ROS tests)"),
    LockSpec("oldest", ("setup.py", "python.txt:torch,pytest,pip", "lock:kilted:kernels"),
             "lowest-direct",
             "scripts/setup-oldest: the engine's declared requirements at their lowest "
             "(torch at CI's pin), pytest, and the newest lock's kernels: transformers 5.0-5.12 "
             "broke on import next to it (.venv-oldest; the engine and tracker tests)"),
)


def lock_path(name: str, directory: Path = LOCK_DIR) -> Path:
    return directory / f"{name}.txt"


# ---------------------------------------------------------------------- reading
def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments and options dropped)."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def setup_py_requirements() -> list[str]:
    """setup.py's install_requires: what `pip install .` declares."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py has no install_requires")


def declared(spec: LockSpec, lock_dir: Path = LOCK_DIR) -> list[Requirement]:
    """The requirements a lock must satisfy, from the inputs its spec names."""
    reqs: list[Requirement] = []
    for item in spec.inputs:
        if item == "setup.py":
            reqs += [Requirement(r) for r in setup_py_requirements()]
            continue
        if item.startswith("lock:"):
            _, name, packages = item.split(":")
            pins = read_lock(lock_path(name, lock_dir))
            reqs += [Requirement(f"{p}=={pins[canonicalize_name(p)]}") for p in packages.split(",")]
            continue
        file, _, only = item.partition(":")
        wanted = {canonicalize_name(n) for n in only.split(",")} if only else None
        for line in requirement_lines(REQUIREMENTS / file):
            req = Requirement(line)
            if wanted is None or canonicalize_name(req.name) in wanted:
                reqs.append(req)
    return reqs


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock file."""
    pins = {}
    for line in requirement_lines(path):
        req = Requirement(line)
        (spec,) = req.specifier
        if spec.operator != "==":
            raise SystemExit(f"{path}: {line!r} is not an exact pin")
        pins[canonicalize_name(req.name)] = spec.version
    return pins


# ---------------------------------------------------------------------- compile
def pip_find_links() -> list[str]:
    """The find-links locations pip is configured with here (environment or pip.conf)."""
    found = os.environ.get("PIP_FIND_LINKS", "").split()
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=False).stdout
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            found += value.strip().strip("'\"").split()
    return list(dict.fromkeys(found))


def torch_source(version: str) -> tuple[list[str], str | None]:
    """uv arguments that make it resolve torch ``version`` against the CPU build, and the
    override pinning that build: a CPU wheel among pip's find-links (as on the project's
    machines), else PyTorch's CPU index (uv's --torch-backend)."""
    for location in pip_find_links():
        folder = Path(location.removeprefix("file://"))
        if any(folder.glob(f"torch-{version}+cpu-*.whl")):
            return ["--find-links", str(folder)], f"torch=={version}+cpu"
    return ["--torch-backend", "cpu"], None


def compile_locks(uv: str, python: str, out: Path, upgrade: bool = True) -> None:
    """Resolve every lock into ``out``. ``upgrade``: the newest versions the ranges allow;
    otherwise the pins already in ``out`` are kept wherever they still satisfy the ranges
    (after adding or changing one requirement, only what it needs moves)."""
    torch_pin = next(r for r in requirement_lines(REQUIREMENTS / "python.txt")
                     if canonicalize_name(Requirement(r).name) == "torch")
    (torch_spec,) = Requirement(torch_pin).specifier
    source_args, override = torch_source(torch_spec.version)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = Path(tmp) / "overrides.txt"
        overrides.write_text(f"{override}\n" if override else "")
        for spec in LOCKS:
            inputs = Path(tmp) / f"{spec.name}.in"
            inputs.write_text("".join(f"{r}\n" for r in declared(spec, out)))
            target = lock_path(spec.name, out)
            cmd = [uv, "pip", "compile", str(inputs), "--output-file", str(target),
                   *(["--upgrade"] if upgrade else []), "--quiet", "--python-version", python,
                   "--resolution", spec.resolution, "--override", str(overrides),
                   "--no-header", *source_args]
            print(f"[locks] resolving {spec.name} ({spec.resolution})", flush=True)
            subprocess.run(cmd, check=True)
            body = target.read_text()
            if override:  # the lock names the version, not the build
                body = body.replace(override, override.split("+")[0])
            body = re.sub(r"^\s+#\s+--override .*\n", "", body, flags=re.MULTILINE)
            body = body.replace(str(inputs), f"{' + '.join(spec.inputs)}")
            header = (f"# Lock '{spec.name}': {spec.purpose}.\n"
                      f"# Resolved by uv ({spec.resolution}) for CPython {python} on Linux from "
                      f"{' + '.join(spec.inputs)} (requirements/).\n"
                      "# Generated by scripts/update-locks: do not edit by hand. torch: any "
                      "build of this version (docs/dependencies.md).\n")
            target.write_text(header + body)


# ---------------------------------------------------------------------- diff
def diff(old_dir: Path, new_dir: Path) -> list[str]:
    """One line per package that moved: ``lock: name old -> new`` (or added / removed)."""
    lines = []
    for spec in LOCKS:
        old_path, new_path = lock_path(spec.name, old_dir), lock_path(spec.name, new_dir)
        old = read_lock(old_path) if old_path.is_file() else {}
        new = read_lock(new_path) if new_path.is_file() else {}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                lines.append(f"{spec.name}: {name} {old.get(name, '(none)')} -> "
                             f"{new.get(name, '(removed)')}")
    return lines


# ---------------------------------------------------------------------- check
def installed_by_installer() -> dict[str, metadata.Distribution]:
    """Distributions a package installer put here (pip, uv), by canonical name. Files that the
    ROS wheels and the stamp_ros CMake build lay down (egg-info without INSTALLER) are no
    packages of their own and are left out."""
    found = {}
    for dist in metadata.distributions():
        if dist.read_text("INSTALLER") is not None:
            found[canonicalize_name(dist.metadata["Name"])] = dist
    return found


def required_by(dists: list[metadata.Distribution]) -> set[str]:
    """Every package the given distributions require, transitively, for this interpreter."""
    env = dict(default_environment(), extra="")
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        dist = todo.pop()
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            if name not in seen:
                seen.add(name)
                if name in installed:
                    todo.append(installed[name])
    return seen


def check(lock: Path) -> tuple[list[str], list[str]]:
    """(problems, extras): every pin of ``lock`` must be installed at its version; extras are
    installed packages the lock does not hold and no locked package requires."""
    pins = read_lock(lock)
    installed = installed_by_installer()
    problems = []
    for name, version in pins.items():
        dist = installed.get(name)
        if dist is None:
            problems.append(f"{name}=={version} is not installed")
        elif not Requirement(f"{name}=={version}").specifier.contains(dist.version,
                                                                      prereleases=True):
            problems.append(f"{name} {dist.version} is installed, the lock says {version}")
    build_deps = required_by([installed[n] for n in pins if n in installed])
    extras = sorted(f"{name}=={dist.version}" for name, dist in installed.items()
                    if name not in pins and name not in build_deps)
    return problems, extras


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_compile = sub.add_parser("compile", help="resolve every lock (scripts/update-locks)")
    p_compile.add_argument("--uv", required=True, help="the uv executable")
    p_compile.add_argument("--python", default=LOCK_PYTHON)
    p_compile.add_argument("--out", type=Path, default=LOCK_DIR)
    p_compile.add_argument("--keep", action="store_true",
                           help="keep the current pins where they still fit the ranges")
    p_diff = sub.add_parser("diff", help="what moved between two lock folders")
    p_diff.add_argument("old", type=Path)
    p_diff.add_argument("new", type=Path)
    p_check = sub.add_parser("check", help="this environment against a lock")
    p_check.add_argument("lock", type=Path)
    p_check.add_argument("--extras-to", type=Path,
                         help="write the extra packages (name==version per line) here and "
                              "leave them to the caller (scripts/install-lock removes them)")
    args = parser.parse_args(argv)
    if args.command == "compile":
        compile_locks(args.uv, args.python, args.out, upgrade=not args.keep)
        return 0
    if args.command == "diff":
        lines = diff(args.old, args.new)
        print("\n".join(lines) if lines else "no package moved")
        return 0
    problems, extras = check(args.lock)
    for line in problems:
        print(f"{args.lock.name}: {line}")
    if args.extras_to is not None:
        args.extras_to.write_text("".join(f"{e}\n" for e in extras))
    else:
        for extra in extras:
            print(f"{args.lock.name}: {extra} is installed but not in the lock")
    return 1 if problems or (extras and args.extras_to is None) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
