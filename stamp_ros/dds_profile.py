"""Where the shipped Fast DDS profile for large images is, and the variables that load it.

``config/fastdds_large_images.xml`` (shared memory with 64 MB segments + UDP on loopback only)
lets 1080p frames travel at full rate between processes on one host; the default transports
deliver a fraction of a 30 Hz 1080p stream (see the README, "Running on a robot"). Fast DDS
reads the profile once, when a process creates its first participant, so the variables must be
set before rclpy.init() -- in every process of the image path.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROFILE_NAME = "fastdds_large_images.xml"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
"""Fast DDS 2.x/3.x (Jazzy and later) read the first, Fast DDS 2.6 (Humble) the second."""


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


def large_image_env(profile: Path | None = None) -> dict[str, str]:
    """The environment variables that make a process load the profile (none when there is no
    profile to load: a variable naming a missing file would make Fast DDS fail to start)."""
    path = profile or large_image_profile()
    return {name: str(path) for name in PROFILE_VARIABLES} if path is not None else {}
