"""pip packaging of the ROS-free part: the STAMP engine and the offline `stamp-ros` CLI.

The ROS 2 package itself is built by CMake (ament_cmake + rosidl, see CMakeLists.txt): use
`scripts/setup` (PyPI ROS wheels) or `colcon build` in a ROS workspace for the node. This file
serves machines without ROS that only want `stamp-ros segment | bench | make-test-checkpoint`
(`pip install .`), `stamp-ros bag` with `pip install .[bag]` (the pure-Python rosbags
library reads and writes the bags) and `stamp-ros eval` with `pip install .[eval]` (pycocotools
decodes the COCO polygons and RLE masks); `pip install .[sam]` adds segment-anything for
`--refine sam` (only its torch model classes are used: no torchvision). The node and the demo
need the ROS interfaces and are not usable from it.

The message definitions in msg/ are shipped as package data of `stamp_ros.bag.interfaces`, so
`stamp-ros bag` can register the stamp_ros types with rosbags without a ROS install; upstream's
vision_msgs definitions (interfaces/vision_msgs/msg) go beside them, for the bag's detection
topics (rosbags has tf2_msgs itself).
"""

from setuptools import find_packages, setup

setup(
    name="stamp-ros",
    version="0.1.0",
    description="STAMP language-driven segmentation: engine, offline CLI and ROS 2 node",
    license="MIT",
    python_requires=">=3.10",
    packages=[*find_packages(include=["stamp_ros", "stamp_ros.*"]), "stamp_ros.bag.interfaces",
              "stamp_ros.bag.interfaces.vision_msgs.msg"],
    package_dir={"stamp_ros.bag.interfaces": "msg",
                 "stamp_ros.bag.interfaces.vision_msgs.msg": "interfaces/vision_msgs/msg"},
    package_data={"stamp_ros.bag.interfaces": ["*.msg"],
                  "stamp_ros.bag.interfaces.vision_msgs.msg": ["*.msg"]},
    install_requires=[
        "torch>=2.4",
        "transformers>=5.13,<6",
        "tokenizers>=0.22",
        "safetensors>=0.4",
        "peft>=0.18",
        "huggingface-hub>=1.0",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pillow>=10",
        "psutil>=5.9",
        "scipy>=1.10",
    ],
    extras_require={"bag": ["rosbags>=0.11,<0.12"], "eval": ["pycocotools>=2.0.8,<3"],
                    "sam": ["segment-anything>=1.0"]},
    entry_points={"console_scripts": ["stamp-ros=stamp_ros.cli:main"]},
)
