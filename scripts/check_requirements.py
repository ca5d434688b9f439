"""Check that every line of the given requirements files is installed in this interpreter.

usage: python scripts/check_requirements.py FILE...

For each requirement (name, extras, version specifier, environment marker) the installed
distribution must exist and satisfy the specifier, and so must the requirements its extras
add. Prints one line per requirement that is not met, naming it and the file line it comes
from, and exits 1; exits 0 silently when all are met. Only the standard library and
``packaging`` (pip's vendored copy when the venv has none) are used, so it runs in any venv.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a fresh venv: pip always carries a copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name


def requirement_lines(path: Path):
    """(line number, requirement text) for each requirement line; comments and options skipped."""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            yield number, line


def problems(req: Requirement, extra: str = "") -> list[str]:
    """Why ``req`` is not met (empty when it is); follows the extras it asks for."""
    env = dict(default_environment(), extra=extra)
    if req.marker is not None and not req.marker.evaluate(env):
        return []
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        return [f"{req.name} is not installed"]
    version = dist.version
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return [f"{req.name} {version} is installed but {req} is required"]
    found = []
    provided = {canonicalize_name(e) for e in (dist.metadata.get_all("Provides-Extra") or [])}
    for wanted in sorted(req.extras):
        if canonicalize_name(wanted) not in provided:
            found.append(f"{req.name} has no extra [{wanted}]")
            continue
        for dep in dist.requires or []:
            sub = Requirement(dep)
            if sub.marker is not None and sub.marker.evaluate(dict(env, extra=wanted)) and (
                not sub.marker.evaluate(dict(env, extra=""))
            ):
                sub.marker = None
                found += [f"{p} (needed by {req.name}[{wanted}])" for p in problems(sub)]
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    failed = 0
    for name in argv:
        path = Path(name)
        for number, text in requirement_lines(path):
            try:
                req = Requirement(text)
            except InvalidRequirement as exc:
                print(f"{path.name}:{number}: cannot parse {text!r}: {exc}")
                failed += 1
                continue
            for problem in problems(req):
                print(f"{path.name}:{number}: {text}: {problem}")
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
