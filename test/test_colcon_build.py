"""The package builds with colcon like any ROS 2 package, and the overlay is usable.

This is the `colcon build` a robot's workspace runs (here with pip's colcon on the wheels'
prefix): interfaces generated, the Python package, the node executable, launch/ and config/
installed where ROS tools look for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_colcon_build_and_overlay(tmp_path):
    colcon = shutil.which("colcon", path=str(Path(sys.prefix) / "bin"))
    # scripts/setup installs colcon (requirements/python.txt): missing means a broken setup.
    assert colcon is not None, f"colcon is not installed in {sys.prefix}: run scripts/setup"
    src = tmp_path / "ws" / "src" / "stamp_ros"
    # Only what a clone has: tracked files (a stray untracked file must not make it build).
    files = subprocess.run(["git", "ls-files", "-c", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    assert "package.xml" in files and "CMakeLists.txt" in files
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    ws = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix,
               PATH=f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    build = subprocess.run([colcon, "build", "--cmake-args", "-DBUILD_TESTING=OFF"], cwd=ws,
                           env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    install = ws / "install" / "stamp_ros"
    exe = install / "lib" / "stamp_ros" / "stamp_node"
    assert os.access(exe, os.X_OK)
    for rel in ("share/stamp_ros/launch/stamp.launch.py", "share/stamp_ros/config/stamp.yaml",
                "share/stamp_ros/config/stamp.rviz", "share/stamp_ros/package.xml",
                "share/stamp_ros/msg/Segmentation.msg", "bin/stamp-ros"):
        assert (install / rel).is_file(), rel

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import stamp_ros.msg, stamp_ros.ros.node, stamp_ros.engine.segmenter\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "print(stamp_ros.ros.node.__file__)\nprint(stamp_ros.msg.__file__)\n"
        "print(get_package_share_directory('stamp_ros'))\n"
    )
    out = subprocess.run(["bash", "-c", f". install/setup.bash && python {probe}"],
                         cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    node_file, msg_file, share_dir = out.stdout.split()
    for path in (node_file, msg_file, share_dir):
        assert path.startswith(str(install)), (path, install)
