"""vision_msgs and tf2_msgs in the wheel venvs are upstream's types, field for field.

On a ROS install they are the system's packages (package.xml: exec_depend). The PyPI wheel
venvs have neither, so scripts/setup builds interfaces/vision_msgs and interfaces/tf2_msgs
(upstream's .msg files) with the wheels' rosidl toolchain. A subscriber built against the real
package matches ours on Jazzy and newer only if the RIHS01 type hashes (REP-2011) are equal:

* every built type's hash, both the one installed with it (``share/<pkg>/msg/<Type>.json``) and
  the one its compiled type support announces on the graph, equals the hash of the REAL
  package, recorded in ``UPSTREAM`` from builds of it that others published (``SOURCES``:
  repository, commit, path), never recomputed from our files;
* the .msg files are upstream's byte for byte (git blob ids of the upstream tags, README.md of
  each folder), and every one of them has a recorded upstream hash;
* the bag writer's rosbags typestore (stamp_ros.bag) gives the same hashes, so a bag's
  detection and /tf topics carry the real types too.

The RIHS01 hash covers the whole definition (field names, types, constants, nested types) and
nothing else (not comments), and is the same on every distro that has the same definitions: the
upstream values below hold for Jazzy and Kilted alike (vision_msgs 4.1.1 on Jazzy and 4.2.0 on
Kilted have the same msg/ tree, tf2_msgs' msg/ is unchanged since 2010).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
INTERFACES = REPO / "interfaces"


class Source(NamedTuple):
    repo: str
    commit: str
    path: str
    what: str


SOURCES = {
    "ipm-ws": Source(
        "borednuna/ipm-ws", "1d768272c24114f1004e19d0ef8118b73b9a2b68",
        "build/vision_msgs/rosidl_generator_type_description/vision_msgs/msg/<Type>.json",
        "a colcon build of upstream vision_msgs (submodule src/vision_msgs at "
        "ros-perception/vision_msgs 4ef5f0f, msg/ tree 5727b71, the same as 4.1.1's) against "
        "ROS 2 Rolling in /opt/ros/rolling (CMakeCache.txt), November 2023; the same hashes "
        "are in its build/vision_msgs/rosidl_generator_c/.../<type>__description.c"),
    "dai-ws": Source(
        "Benjamin-Hedeby/Dai_ws", "2866fb099196ff7f8e4a69dbab63c017020b95a9",
        "build/depthai_ros_msgs/rosidl_generator_c/depthai_ros_msgs/msg/detail/"
        "{spatial_detection,track_detection2_d}__description.c",
        "the EXPECTED_HASH of each vision_msgs type depthai_ros_msgs nests, which rosidl reads "
        "from the installed package: ros-jazzy-vision-msgs (vision_msgs_DIR "
        "/opt/ros/jazzy/share/vision_msgs/cmake in its CMakeCache.txt)"),
    "mesh-ws": Source(
        "patnana-tarun/ros2_ws", "a2881aa32bac58574a15fa10f46f9be47011320a",
        "build/my_mesh_interfaces/rosidl_generator_c/my_mesh_interfaces/msg/detail/"
        "mesh_tf__description.c",
        "tf2_msgs__msg__TFMessage__EXPECTED_HASH, read from the installed ros-jazzy-tf2-msgs "
        "(/opt/ros/jazzy in its CMakeCache.txt)"),
    "wildos": Source(
        "h750vbt6-star/WildOS_ZYL", "1e069c8cc7790218ab3749fa58e10a1716fe1f53",
        "build/object_search_msgs/rosidl_generator_c/object_search_msgs/msg/detail/"
        "object_mask_with_tf__description.c",
        "tf2_msgs__msg__TFMessage__EXPECTED_HASH, read from the installed ros-jazzy-tf2-msgs "
        "(/opt/ros/jazzy in its CMakeCache.txt)"),
    "carla": Source(
        "youtalk/carla", "37830afabf0bf01a4f39ff35a4ac151e903c22f3",
        "LibCarla/source/test/server/test_type_hash.cpp",
        "CARLA's golden hashes, taken (its comment says) from the JSON that each package "
        "installs in osrf/ros:jazzy-desktop (/opt/ros/jazzy/share/tf2_msgs/msg/<Type>.json)"),
}
"""Where the upstream hashes come from: published builds of the real packages."""

UPSTREAM = {
    "vision_msgs/msg/BoundingBox2D": (
        "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
        ("ipm-ws", "dai-ws")),
    "vision_msgs/msg/BoundingBox2DArray": (
        "RIHS01_2464e82838009386d371b523211c21c91d74d313fcdd6788223c531d621cf691",
        ("ipm-ws",)),
    "vision_msgs/msg/BoundingBox3D": (
        "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
        ("ipm-ws",)),
    "vision_msgs/msg/BoundingBox3DArray": (
        "RIHS01_a81938db9576b10c2eecd7c5a5da3eac496efd00221b25ed051dfbc81fb56da6",
        ("ipm-ws",)),
    "vision_msgs/msg/Classification": (
        "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
        ("ipm-ws",)),
    "vision_msgs/msg/Detection2D": (
        "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
        ("ipm-ws",)),
    "vision_msgs/msg/Detection2DArray": (
        "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
        ("ipm-ws",)),
    "vision_msgs/msg/Detection3D": (
        "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
        ("ipm-ws",)),
    "vision_msgs/msg/Detection3DArray": (
        "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
        ("ipm-ws",)),
    "vision_msgs/msg/LabelInfo": (
        "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
        ("ipm-ws",)),
    "vision_msgs/msg/ObjectHypothesis": (
        "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
        ("ipm-ws", "dai-ws")),
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
        ("ipm-ws", "dai-ws")),
    "vision_msgs/msg/Point2D": (
        "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
        ("ipm-ws", "dai-ws")),
    "vision_msgs/msg/Pose2D": (
        "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
        ("ipm-ws", "dai-ws")),
    "vision_msgs/msg/VisionClass": (
        "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
        ("ipm-ws",)),
    "vision_msgs/msg/VisionInfo": (
        "RIHS01_95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
        ("ipm-ws",)),
    "tf2_msgs/msg/TFMessage": (
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
        ("mesh-ws", "wildos", "carla")),
    "tf2_msgs/msg/TF2Error": (
        "RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a",
        ("carla",)),
}
"""Each upstream type's RIHS01 hash and the SOURCES that publish it (all of them agree)."""

UPSTREAM_BLOBS = {
    # ros-perception/vision_msgs tag 4.1.1 (e77fa2d), vision_msgs/msg/
    "vision_msgs/msg/BoundingBox2D.msg": "1f9152d4f15a0189dc7675d80b55aa7dc8d7b6b4",
    "vision_msgs/msg/BoundingBox2DArray.msg": "31bd42f6c79ca4bd82aa63b283d18df86d3e78cb",
    "vision_msgs/msg/BoundingBox3D.msg": "cb8f49da3c8f2c108a7a11818f57d8c6226c9874",
    "vision_msgs/msg/BoundingBox3DArray.msg": "c998e699dd4d07ca6cf8e7c5805b2f4b384c8b3a",
    "vision_msgs/msg/Classification.msg": "ec1404c3a44e1fb50f3eaf365529f2530eb99ddd",
    "vision_msgs/msg/Detection2D.msg": "c2eb7f41493063ae68f31797a7be1683efacb049",
    "vision_msgs/msg/Detection2DArray.msg": "7d05be04092d5cd295bf241184b4ed1a6e6c1335",
    "vision_msgs/msg/Detection3D.msg": "bed3f72691d260216581c917e5abb8b4c8c0b15c",
    "vision_msgs/msg/Detection3DArray.msg": "b3d3011a82e1a2fe7567fc3d21239f86fc92fa0c",
    "vision_msgs/msg/LabelInfo.msg": "d73a3c5e52982af53ad126b5ec15426178619946",
    "vision_msgs/msg/ObjectHypothesis.msg": "e6716e83bfee213144f3fb5846e63e9ea08963d2",
    "vision_msgs/msg/ObjectHypothesisWithPose.msg": "bc6c6e8b0ce7c81fb46ca5b990d9bd2d3423859f",
    "vision_msgs/msg/Point2D.msg": "01455417ab5010f3d0b39b8fcb5e6d0bd50d9380",
    "vision_msgs/msg/Pose2D.msg": "367dcec904ea7168db21a2d59c93c2bcf653bc3e",
    "vision_msgs/msg/VisionClass.msg": "93f2181b876866e0f2ce5f8c99bbe929dda46423",
    "vision_msgs/msg/VisionInfo.msg": "8058070997dcfb6365d7070821680422d30fd42a",
    # ros2/geometry2 tag 0.36.4 (da10f77), tf2_msgs/msg/
    "tf2_msgs/msg/TF2Error.msg": "e737b64698facba33e32f9cb934d336c207b20bc",
    "tf2_msgs/msg/TFMessage.msg": "fda1e4d0985406667d26b7b36cbbedc9bb497074",
}
"""git blob id of each upstream .msg file: ours must be the same bytes."""

PACKAGES = ("vision_msgs", "tf2_msgs")


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _package_prefix(package: str) -> Path:
    """The install prefix the importable ``package`` lives in (the venv, or /opt/ros/...)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin, (
        f"{package} is not importable with {sys.executable}: run scripts/setup")
    # <prefix>/lib/pythonX.Y/site-packages/<package>/__init__.py
    return Path(spec.origin).resolve().parents[4]


# ------------------------------------------------------------------------ the sources themselves
def test_msg_files_are_upstreams_byte_for_byte():
    ours = {str(p.relative_to(INTERFACES)): _git_blob_id(p.read_bytes())
            for pkg in PACKAGES for p in sorted((INTERFACES / pkg / "msg").glob("*.msg"))}
    assert ours == UPSTREAM_BLOBS


def test_every_built_message_has_a_recorded_upstream_hash_and_source():
    built = {f"{pkg}/msg/{p.stem}" for pkg in PACKAGES
             for p in (INTERFACES / pkg / "msg").glob("*.msg")}
    assert built == set(UPSTREAM)
    for name, (hash_string, sources) in UPSTREAM.items():
        assert hash_string.startswith("RIHS01_") and len(hash_string) == 71, name
        assert sources and set(sources) <= set(SOURCES), name
    # CMakeLists.txt builds every file of msg/, no more.
    for pkg in PACKAGES:
        cmake = (INTERFACES / pkg / "CMakeLists.txt").read_text()
        listed = {line.strip().strip('"') for line in cmake.splitlines()
                  if line.strip().strip('"').startswith("msg/")}
        assert listed == {f"msg/{p.name}" for p in (INTERFACES / pkg / "msg").glob("*.msg")}


def test_the_bag_writers_typestore_has_the_upstream_hashes():
    from stamp_ros.bag.interfaces import typestore

    store = typestore()
    got = {name: store.hash_rihs01(name) for name in UPSTREAM}
    assert got == {name: hash_string for name, (hash_string, _) in UPSTREAM.items()}


# ------------------------------------------------------------------------ the built packages
@pytest.mark.ros
@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_installed_type_description_hash_is_upstreams(name):
    package, _, type_name = name.split("/")
    description = _package_prefix(package) / "share" / package / "msg" / f"{type_name}.json"
    hashes = json.loads(description.read_text())["type_hashes"]
    assert hashes[0]["type_name"] == name
    assert hashes[0]["hash_string"] == UPSTREAM[name][0], (
        f"{name} built in {description.parents[3]} is not upstream's type "
        f"(sources: {[SOURCES[s].repo for s in UPSTREAM[name][1]]})")


ANNOUNCE = """
import json, sys
import rclpy
from rclpy.node import Node
from importlib import import_module
rclpy.init()
node = Node("type_hash_probe")
hashes = {}
for i, name in enumerate(sys.argv[1:]):
    package, kind, type_name = name.split("/")
    msg_type = getattr(import_module(f"{package}.{kind}"), type_name)
    topic = f"/type_hash_probe_{i}"
    node.create_publisher(msg_type, topic, 1)
    (info,) = node.get_publishers_info_by_topic(topic)
    hashes[name] = [info.topic_type, str(info.topic_type_hash)]
node.destroy_node()
rclpy.shutdown()
print("HASHES " + json.dumps(hashes))
"""
"""A node publishing every type once: the hash each compiled type support announces."""


@pytest.mark.ros
def test_announced_type_hashes_are_upstreams(ros_env):
    """What a subscriber on the network compares: the hash in each publisher's graph info."""
    names = sorted(UPSTREAM)
    out = subprocess.run([sys.executable, "-c", ANNOUNCE, *names], env=ros_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("HASHES "))
    announced = json.loads(line.removeprefix("HASHES "))
    assert announced == {name: [name, hash_string] for name, (hash_string, _) in UPSTREAM.items()}
