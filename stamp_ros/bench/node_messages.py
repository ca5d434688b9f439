"""The node's message work around one request, done the way the node does it.

A request through the node costs more than the engine call: the incoming ``sensor_msgs/Image``
is converted to numpy first, and the answer leaves as a ``stamp_ros/Segmentation`` message with
full-resolution masks plus the union ``~/mask`` image. The engine benchmark times these parts
as the ``convert`` and ``publish`` stages. Without the generated ROS interfaces (a GPU machine
with only torch) the work is skipped and reported as absent rather than failing the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NodeMessages:
    """Image conversion and result messages as the node builds them, or a no-op without ROS."""

    def __init__(self) -> None:
        try:
            from std_msgs.msg import Header

            from stamp_ros.msgs.convert import image_msg_to_rgb
            from stamp_ros.pipeline.results import segmentation_msg
            from stamp_ros.render.overlay import union_mask
            from stamp_ros.ros.kit import mono8_to_image_msg, rclpy_kit, rgb_to_image_msg
        except Exception as exc:  # ImportError, or broken generated interfaces
            self.available, self.reason = False, f"{type(exc).__name__}: {exc}"
            return
        self.available, self.reason = True, ""
        self.header = Header(frame_id="camera_color_optical_frame")
        self._to_msg = rgb_to_image_msg
        self._to_rgb = image_msg_to_rgb
        self._mono8 = mono8_to_image_msg
        self._union = union_mask
        self._seg_msg = segmentation_msg
        self._kit = rclpy_kit()

    def message(self, frame: np.ndarray) -> Any:
        """The frame as a camera would publish it (rgb8), or the array itself without ROS."""
        return self._to_msg(frame, self.header) if self.available else frame

    def convert(self, msg: Any) -> np.ndarray:
        """What the node's image callback does with an incoming frame."""
        return self._to_rgb(msg) if self.available else msg

    def publish(self, result: Any, query: str) -> None:
        """Build the messages the node publishes for ``result`` (built, not sent)."""
        if not self.available:
            return
        self._seg_msg(
            request_id="bench", query=query, header=self.header, result=result,
            model="bench", wait_ms=0.0, convert_ms=0.0, kit=self._kit,
        )
        masks = [inst.mask for inst in result.instances]
        h, w = result.image_size[1], result.image_size[0]
        self._mono8(self._union(masks, (h, w)), self.header)
