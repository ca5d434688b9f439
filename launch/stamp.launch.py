"""Start the stamp_ros node (and optionally RViz).

    ros2 launch stamp_ros stamp.launch.py model:=JiaZL/STAMP-2B-uni image:=/camera/color/image_raw
"""

import os
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from stamp_ros.cli.dds_profile import CHOICE_VARIABLE, large_image_env

ARGUMENTS = {
    "model": ("", "hub id or local path of the STAMP checkpoint (empty: the params_file value)"),
    "namespace": ("", "namespace of the node and its topics"),
    "image": ("image", "camera image topic (sensor_msgs/Image); image/compressed follows it"),
    "query": ("query", "topic of plain-text queries (std_msgs/String)"),
    "depth": ("depth", "aligned depth image topic (16UC1 mm or 32FC1 m), optional"),
    "camera_info": ("camera_info", "CameraInfo topic of the depth/colour camera, optional"),
    "params_file": ("", "YAML parameters (default: share/stamp_ros/config/stamp.yaml)"),
    "use_rviz": ("false", "also start RViz with config/stamp.rviz"),
    "large_images": ("true", "load config/fastdds_large_images.xml (shared memory with 64 MB "
                     "segments + loopback UDP) in the started processes: full-rate 1080p frames "
                     "from a camera driver that loads it too; false = Fast DDS defaults "
                     "(the node also loads it by itself unless told otherwise)"),
}


def _nodes(context):
    share = get_package_share_directory("stamp_ros")
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(
        share, "config", "stamp.yaml")
    parameters = [params_file]
    model = LaunchConfiguration("model").perform(context)
    if model:
        parameters.append({"model": model})
    image = LaunchConfiguration("image").perform(context)
    stamp = Node(
        package="stamp_ros",
        executable="stamp_node",
        name="stamp_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=parameters,
        remappings=[
            ("image", image),
            ("image/compressed", image + "/compressed"),
            ("query", LaunchConfiguration("query")),
            ("depth", LaunchConfiguration("depth")),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="stamp_rviz",
        arguments=["-d", os.path.join(share, "config", "stamp.rviz")],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
    )
    actions = []
    if IfCondition(LaunchConfiguration("large_images")).evaluate(context):
        profile = Path(share, "config", "fastdds_large_images.xml")
        # Fast DDS reads the file when a process creates its first participant: set it for
        # the processes this launch starts, in the one variable this distro's Fast DDS reads
        # (none when the user set their own profile: theirs wins).
        actions += [SetEnvironmentVariable(name, value)
                    for name, value in large_image_env(profile).items()]
    else:  # the node would load the shipped profile by itself: Fast DDS's defaults instead
        actions.append(SetEnvironmentVariable(CHOICE_VARIABLE, "default"))
    return [*actions, stamp, rviz]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=doc)
                for name, (default, doc) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
