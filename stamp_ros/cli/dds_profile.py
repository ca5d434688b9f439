"""Where the shipped Fast DDS profile for large images is, and the variables that load it.

``config/fastdds_large_images.xml`` (shared memory with 64 MB segments + UDP on loopback only)
lets 1080p frames travel at full rate between processes on one host; the default transports
deliver a fraction of a 30 Hz 1080p stream (docs/robot.md, "Large images over DDS"). Fast DDS
reads the profile once, when a process creates its first participant, so the variables must be
set before rclpy.init() -- in every process of the image path.

The node applies it to itself (:func:`use_large_image_profile`, called by
:mod:`stamp_ros.cli.run_node` before ``rclpy.init``), so a node started any way (``ros2 run``,
``python -m``, the launch file) gets it; a profile the user set in either variable wins, and
``STAMP_ROS_DDS_PROFILE=default`` keeps Fast DDS's defaults. Its UDP is on 127.0.0.1 only:
subscribers on other hosts need their own profile (docs/robot.md).

Which variable depends on the distro's Fast DDS: 3.x (Kilted and later) reads
``FASTDDS_DEFAULT_PROFILES_FILE`` and prints a deprecation warning at every start when
``FASTRTPS_DEFAULT_PROFILES_FILE`` is set too; 2.x (Humble's 2.6, Jazzy's 2.14) reads only
``FASTRTPS_DEFAULT_PROFILES_FILE``. So exactly the one this ROS install reads is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PROFILE_NAME = "fastdds_large_images.xml"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
"""Fast DDS 3.x reads the first, 2.x the second; a value of either set by the user wins."""
CHOICE_VARIABLE = "STAMP_ROS_DDS_PROFILE"
"""``default``: the node keeps Fast DDS's default transports instead of the shipped profile
(the launch file sets it for ``large_images:=false``)."""
FASTDDS_2_DISTROS = ("humble", "iron", "jazzy")
"""ROS distros that ship Fast DDS 2.x (used when no Fast DDS install is found to look at)."""


def large_image_profile() -> Path | None:
    """The profile in the installed package's share directory, else in this source tree; None
    where neither has it (a pip install of the engine and CLI alone)."""
    candidates = [
        # the environment's own prefix (a ROS install, or the venv scripts/setup makes one)
        Path(sys.prefix) / "share" / "stamp_ros" / "config" / PROFILE_NAME,
        Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME,  # a source checkout
    ]
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("stamp_ros"))
        candidates.insert(0, share / "config" / PROFILE_NAME)
    except Exception:  # not installed as a ROS package (source checkout, pip install)
        pass
    return next((path for path in candidates if path.is_file()), None)


def _ros_prefixes(environ: Mapping[str, str]) -> list[Path]:
    """The ROS install prefixes of this environment: AMENT_PREFIX_PATH, then this Python's
    own prefix (the venv that scripts/setup makes is one)."""
    entries = environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    return [Path(p) for p in dict.fromkeys([*filter(None, entries), sys.prefix])]


def profile_variable(environ: Mapping[str, str] | None = None) -> str:
    """The variable this ROS install's Fast DDS reads its profile from.

    Fast DDS 3 installs itself as the package ``fastdds`` (share/fastdds), Fast DDS 2 as
    ``fastrtps`` (share/fastrtps): the first prefix that holds either decides. Without one
    (rclpy not installed here), ROS_DISTRO decides, and Fast DDS 3's variable is the default."""
    environ = os.environ if environ is None else environ
    for prefix in _ros_prefixes(environ):
        if (prefix / "share" / "fastdds").is_dir():
            return PROFILE_VARIABLES[0]
        if (prefix / "share" / "fastrtps").is_dir():
            return PROFILE_VARIABLES[1]
    if environ.get("ROS_DISTRO", "").lower() in FASTDDS_2_DISTROS:
        return PROFILE_VARIABLES[1]
    return PROFILE_VARIABLES[0]


def large_image_env(profile: Path | None = None,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variable that makes a process load the profile: the one this distro's
    Fast DDS reads (:func:`profile_variable`). None when the user already set either variable
    (their profile wins) or when there is no profile to load (a variable naming a missing file
    would make Fast DDS fail to start)."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in PROFILE_VARIABLES):
        return {}
    path = profile or large_image_profile()
    return {profile_variable(environ): str(path)} if path is not None else {}


def use_large_image_profile(environ: MutableMapping[str, str] | None = None) -> str:
    """Load the shipped profile in this process (before ``rclpy.init``) unless the user chose
    otherwise; the line that says which profile is in force, for the node's log.

    Kept as chosen: a profile in either Fast DDS variable, ``STAMP_ROS_DDS_PROFILE=default``,
    or an RMW other than Fast DDS (``RMW_IMPLEMENTATION``), which reads no Fast DDS profile.
    """
    environ = os.environ if environ is None else environ
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return f"DDS: {rmw} (RMW_IMPLEMENTATION): the Fast DDS profile does not apply"
    for name in PROFILE_VARIABLES:
        if environ.get(name):
            return f"DDS profile: {environ[name]} (yours, from {name})"
    if environ.get(CHOICE_VARIABLE, "").strip().lower() == "default":
        return (f"DDS profile: Fast DDS's defaults ({CHOICE_VARIABLE}=default): large frames "
                "arrive at a fraction of their rate and bursts of calls can be lost")
    env = large_image_env(environ=environ)
    if not env:
        return "DDS profile: Fast DDS's defaults (the shipped profile is not installed here)"
    environ.update(env)
    ((name, path),) = env.items()
    return (f"DDS profile: {path} (shipped: shared memory with 64 MB segments + UDP on "
            f"127.0.0.1 only, set in {name}; peers on other hosts need your own profile, "
            f"or {CHOICE_VARIABLE}=default)")
