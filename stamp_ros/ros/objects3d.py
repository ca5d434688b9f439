"""3D outputs of a request: masks + paired depth + CameraInfo -> objects, points and markers.

The geometry is pure numpy (:mod:`stamp_ros.geometry`, :mod:`stamp_ros.ros.depth3d`); this
module picks the depth image for the frame, optionally moves the result into ``target_frame``
through tf2 (when ``tf2_ros`` is installed), and publishes ``~/points`` and ``~/markers``.
"""

from __future__ import annotations

from typing import Any

from stamp_ros.ros.camera import Camera
from stamp_ros.ros.depth3d import lift_instances, pair_depth, transform_objects

THROTTLE_S = 10.0
"""A missing depth pairing or transform is logged at most this often per cause."""


class ObjectLifter:
    """Lifts a result's masks to 3D for one node (which owns the tf listener, if any)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._tf_buffer: Any = None
        self._tf_listener: Any = None
        self._tf_missing = False

    def lift(self, camera: Camera, header: Any, result: Any, *, depth_max_skew: float,
             depth_scale: float, target_frame: str) -> tuple[list | None, str]:
        """Per instance its 3D summary (or None) and the frame they are in; (None, "") when the
        camera has no depth or intrinsics or no depth image is within ``depth_max_skew``.
        Publishes the points and markers of the camera as a side effect."""
        objects, points, frame_id = self.lift_masks(
            camera, header, [inst.mask for inst in result.instances],
            depth_max_skew=depth_max_skew, depth_scale=depth_scale, target_frame=target_frame)
        if objects is None:
            return None, ""
        self._publish(camera, header, frame_id, objects, points, result.text)
        return objects, frame_id

    def lift_masks(self, camera: Camera, header: Any, masks: list, *, depth_max_skew: float,
                   depth_scale: float, target_frame: str) -> tuple[list | None, list, str]:
        """:meth:`lift` without publishing: (objects, points, frame id), objects None when
        there is nothing to lift (also used for every tracked frame)."""
        if not masks or not camera.depth or camera.camera_info is None:
            return None, [], ""
        depth = pair_depth(header, list(camera.depth), depth_max_skew)
        if depth is None:
            self._node.get_logger().warning(
                "depth is subscribed but no depth image is within depth_max_skew of the frame",
                throttle_duration_sec=THROTTLE_S)
            return None, [], ""
        objects, points = lift_instances(masks, depth, camera.camera_info, depth_scale)
        frame_id = header.frame_id
        if target_frame and target_frame != frame_id:
            objects, points, frame_id = self._to_target_frame(objects, points, header,
                                                              target_frame)
        return objects, points, frame_id

    def _to_target_frame(self, objects: list, points: list, header: Any,
                         target: str) -> tuple[list, list, str]:
        """Transform through tf2 when it is installed and has the transform; else keep the
        camera frame and say why (throttled)."""
        import rclpy.duration
        import rclpy.time

        buffer = self._buffer()
        if buffer is None:
            self._node.get_logger().warning(
                f"target_frame {target!r} set but tf2_ros is not installed: 3D stays in "
                f"{header.frame_id!r}", throttle_duration_sec=THROTTLE_S)
            return objects, points, header.frame_id
        try:
            tf = buffer.lookup_transform(target, header.frame_id, rclpy.time.Time.from_msg(
                header.stamp), timeout=rclpy.duration.Duration(seconds=0.1))
        except Exception as exc:
            self._node.get_logger().warning(
                f"no transform {header.frame_id!r} -> {target!r}: {exc}; 3D stays in the "
                "camera frame", throttle_duration_sec=THROTTLE_S)
            return objects, points, header.frame_id
        t, q = tf.transform.translation, tf.transform.rotation
        objects, points = transform_objects(objects, points, (q.x, q.y, q.z, q.w),
                                            (t.x, t.y, t.z))
        return objects, points, target

    def _buffer(self) -> Any:
        """The tf2 buffer, created (with its listener) on first use; None without tf2_ros."""
        if self._tf_buffer is None and not self._tf_missing:
            try:
                from tf2_ros import Buffer, TransformListener
            except ImportError:
                self._tf_missing = True
                return None
            self._tf_buffer = Buffer()
            self._tf_listener = TransformListener(self._tf_buffer, self._node)
        return self._tf_buffer

    @staticmethod
    def _publish(camera: Camera, header: Any, frame_id: str, objects: list, points: list,
                 answer: str) -> None:
        from stamp_ros.ros.cloud import objects_to_markers, points_to_cloud

        out_header = type(header)()
        out_header.stamp, out_header.frame_id = header.stamp, frame_id
        camera.outputs["points"].publish(points_to_cloud(points, out_header))
        labels = [f"{answer[:40]} #{i}" for i in range(len(objects))]
        camera.outputs["markers"].publish(objects_to_markers(objects, labels, out_header))
