"""The launch file and the installed layout that `ros2 launch stamp_ros stamp.launch.py` needs.

launch/launch_ros are not available as wheels, so the file is checked statically here, and
really loaded where launch_ros is importable (a ROS 2 install). The parameters in
config/stamp.yaml and docs/parameters.md are checked against the code by test_docs.py.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "stamp.launch.py"
PREFIX = Path(sys.prefix)


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), str(LAUNCH))


def test_launch_file_parses_and_declares_its_arguments():
    tree = _launch_tree()
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names
    args = next(n for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "ARGUMENTS")
    declared = {k.value for k in args.value.keys}
    assert {"model", "namespace", "image", "query", "params_file", "use_rviz"} <= declared


def test_launch_file_points_at_installed_executable_and_config():
    calls = [n for n in ast.walk(_launch_tree()) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "Node"]
    targets = {(kw["package"], kw["executable"]) for kw in (
        {k.arg: k.value.value for k in c.keywords if isinstance(k.value, ast.Constant)}
        for c in calls)}
    assert ("stamp_ros", "stamp_node") in targets
    exe = PREFIX / "lib" / "stamp_ros" / "stamp_node"
    assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} not installed (run scripts/setup)"
    share = PREFIX / "share" / "stamp_ros"
    for rel in ("launch/stamp.launch.py", "config/stamp.yaml", "config/stamp.rviz",
                "package.xml"):
        assert (share / rel).is_file(), f"{rel} not installed into {share}"


def test_rviz_config_shows_images_objects_detections_labels_and_tf():
    rviz = yaml.safe_load((REPO / "config" / "stamp.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    by_topic = {d["Topic"]["Value"]: d["Class"] for d in displays if "Topic" in d}
    assert {"/image", "/stamp_node/overlay", "/stamp_node/mask", "/stamp_node/points",
            "/stamp_node/markers"} <= by_topic.keys()
    for labels in ("/stamp_node/labels", "/stamp_node/tracks/labels"):
        # 16UC1 labels 1..n are black unless RViz stretches the range
        display = next(d for d in displays if d.get("Topic", {}).get("Value") == labels)
        assert display["Class"] == "rviz_default_plugins/Image" and display["Normalize Range"]
    for boxes in ("/stamp_node/detections_3d", "/stamp_node/tracks/detections_3d"):
        assert by_topic[boxes] == "vision_msgs_rviz_plugins/Detection3DArray"
    assert any(d["Class"] == "rviz_default_plugins/TF" for d in displays)


def test_installed_executable_starts_with_ros_args(tmp_path):
    """lib/stamp_ros/stamp_node parses --ros-args like launch passes them (here it must fail
    cleanly on a bad parameter, which proves the arguments reached rclpy)."""
    exe = PREFIX / "lib" / "stamp_ros" / "stamp_node"
    env = dict(os.environ, ROS_DOMAIN_ID="97", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PATH=f"{PREFIX / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    out = subprocess.run(
        [str(exe), "--ros-args", "-p", "mode:=sideways", "-p", "stats_period:=0.0"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert "mode must be one of once, continuous" in text, text[-2000:]


def test_launch_description_loads_where_launch_ros_exists():
    launch_ros = pytest.importorskip("launch_ros")
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    ld = PythonLaunchDescriptionSource(str(LAUNCH)).try_get_launch_description_without_context()
    assert ld.entities and launch_ros is not None


def test_out_of_range_parameter_is_refused_at_start(tmp_path):
    env = dict(os.environ, ROS_DOMAIN_ID="96", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    out = subprocess.run(
        [sys.executable, "-m", "stamp_ros.cli.run_node", "--ros-args", "-p", "max_pending:=0"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "max_pending out of range" in out.stdout + out.stderr


def test_large_image_profile_is_declared_on_by_default_installed_and_well_formed():
    import xml.etree.ElementTree as ET

    from stamp_ros.cli.dds_profile import large_image_env

    args = next(n for n in _launch_tree().body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "ARGUMENTS")
    defaults = {k.value: v.elts[0].value for k, v in zip(args.value.keys, args.value.values,
                                                          strict=True)}
    assert defaults["large_images"] == "true"
    assert "fastdds_large_images.xml" in LAUNCH.read_text()
    installed = PREFIX / "share" / "stamp_ros" / "config" / "fastdds_large_images.xml"
    assert installed.is_file(), "profile not installed (run scripts/setup)"
    env = large_image_env(environ={})
    assert len(env) == 1, env  # the one variable this distro's Fast DDS reads (test_dds_profile)
    assert Path(*env.values()).read_bytes() == installed.read_bytes()

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(installed).getroot()
    transports = {t.findtext("d:transport_id", namespaces=ns): t
                  for t in root.iterfind(".//d:transport_descriptor", ns)}
    kinds = {t.findtext("d:type", namespaces=ns): t for t in transports.values()}
    assert int(kinds["SHM"].findtext("d:segment_size", namespaces=ns)) >= 64 * 2**20
    allowed = [a.text for a in kinds["UDPv4"].iterfind(".//d:address", ns)]
    assert allowed == ["127.0.0.1"], "only loopback: no DDS traffic leaves this host"
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(transports)
