"""The large-image profile is loaded through the one variable the distro's Fast DDS reads.

Fast DDS 3 (Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE and warns at every start when the
deprecated FASTRTPS_DEFAULT_PROFILES_FILE is set as well; Fast DDS 2 (Humble, Jazzy) reads only
FASTRTPS_DEFAULT_PROFILES_FILE. The ROS test runs in every venv CI has (Kilted, then Jazzy), so
each distro proves that the variable chosen for it is the one its Fast DDS reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stamp_ros.cli.dds_profile import (
    CHOICE_VARIABLE,
    PROFILE_VARIABLES,
    large_image_env,
    large_image_profile,
    profile_variable,
    use_large_image_profile,
)

FASTDDS, FASTRTPS = PROFILE_VARIABLES


def _prefix(tmp_path: Path, name: str, package: str | None) -> Path:
    prefix = tmp_path / name
    (prefix / "share" / (package or "other")).mkdir(parents=True)
    return prefix


def test_the_install_prefix_decides_the_variable(tmp_path: Path):
    v3 = _prefix(tmp_path, "kilted", "fastdds")
    v2 = _prefix(tmp_path, "jazzy", "fastrtps")
    plain = _prefix(tmp_path, "ws", None)
    assert profile_variable({"AMENT_PREFIX_PATH": f"{plain}:{v3}"}) == FASTDDS
    assert profile_variable({"AMENT_PREFIX_PATH": f"{plain}{os.pathsep}{v2}"}) == FASTRTPS
    # the first prefix that holds a Fast DDS wins, as it would on the library path
    assert profile_variable({"AMENT_PREFIX_PATH": f"{v2}:{v3}"}) == FASTRTPS


def test_without_a_fast_dds_install_ros_distro_decides(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(_prefix(tmp_path, "bare", None)))
    assert profile_variable({"ROS_DISTRO": "humble"}) == FASTRTPS
    assert profile_variable({"ROS_DISTRO": "jazzy"}) == FASTRTPS
    assert profile_variable({"ROS_DISTRO": "kilted"}) == FASTDDS
    assert profile_variable({}) == FASTDDS


def test_one_variable_and_the_users_own_profile_wins(tmp_path: Path):
    profile = tmp_path / "p.xml"
    profile.write_text("<dds/>")
    env = large_image_env(profile, environ={})
    assert list(env.values()) == [str(profile)] and set(env) <= set(PROFILE_VARIABLES)
    for name in PROFILE_VARIABLES:  # a value the user set, of either variable, is kept
        assert large_image_env(profile, environ={name: "/robot/profile.xml"}) == {}
    assert large_image_env(profile, environ={FASTDDS: ""}) == env  # empty = not set


def test_the_node_loads_the_shipped_profile_unless_told_otherwise(tmp_path: Path):
    """What run_node does before rclpy.init, and the line it logs."""
    shipped = large_image_profile()
    assert shipped is not None, "profile not installed (run scripts/setup)"
    environ: dict[str, str] = {}
    line = use_large_image_profile(environ)
    assert environ == large_image_env(shipped, environ={}) and len(environ) == 1
    assert str(shipped) in line and "shipped" in line and "127.0.0.1 only" in line
    for name in PROFILE_VARIABLES:  # the user's own profile wins, and the log says so
        own = {name: "/robot/dds.xml"}
        assert "/robot/dds.xml (yours, from" in use_large_image_profile(own)
        assert own == {name: "/robot/dds.xml"}
    opted_out = {CHOICE_VARIABLE: "default"}
    assert "Fast DDS's defaults" in use_large_image_profile(opted_out)
    assert opted_out == {CHOICE_VARIABLE: "default"}
    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert "does not apply" in use_large_image_profile(cyclone) and len(cyclone) == 1
    fast = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    assert "shipped" in use_large_image_profile(fast) and len(fast) == 2


PROBE = """
import rclpy
rclpy.init()
node = rclpy.create_node("profile_probe")
node.destroy_node()
rclpy.shutdown()
print("probe done", flush=True)
"""


def _profile_deprecated(output: str) -> bool:
    """Fast DDS 3's warning that the profile came from the deprecated FASTRTPS_ variable."""
    return any("DEFAULT_PROFILES_FILE" in line and "deprecated" in line
               for line in output.splitlines())


def _start_participant(ros_env: dict[str, str], extra: dict[str, str]) -> str:
    env = {k: v for k, v in ros_env.items() if k not in PROFILE_VARIABLES}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=120, cwd="/")
    assert "probe done" in out.stdout, out.stdout + out.stderr
    return out.stdout + out.stderr


@pytest.mark.ros
def test_this_distros_fast_dds_reads_the_chosen_variable(ros_env, tmp_path: Path):
    profile = large_image_profile()
    assert profile is not None, "profile not installed (run scripts/setup)"
    env = large_image_env(profile, environ=ros_env | {k: "" for k in PROFILE_VARIABLES})
    (variable,) = env
    # The shipped profile loads without a word (no deprecated variable is set).
    quiet = _start_participant(ros_env, env)
    assert not _profile_deprecated(quiet) and "XMLPARSER" not in quiet, quiet
    # A broken file in the same variable is read: the parser complains, so that variable is
    # the one this Fast DDS reads (a variable it ignored would start silently).
    broken = tmp_path / "broken.xml"
    broken.write_text("<dds><profiles")
    out = _start_participant(ros_env, {variable: str(broken)})
    assert "XMLPARSER" in out and str(broken) in out, out
    # ...and the other variable is not this distro's: set alone, it is ignored (Fast DDS 2)
    # or read with a deprecation warning (Fast DDS 3).
    other = next(v for v in PROFILE_VARIABLES if v != variable)
    out = _start_participant(ros_env, {other: str(profile)})
    assert _profile_deprecated(out) == (variable == FASTDDS), out
