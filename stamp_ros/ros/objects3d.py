"""3D outputs of a request: masks + paired depth + CameraInfo -> objects, points and markers.

The geometry is pure numpy (:mod:`stamp_ros.spatial.geometry`,
:mod:`stamp_ros.spatial.depth3d`); this module lifts a result's masks with the camera's depth,
optionally moves them into ``target_frame`` through tf2 (withholding the 3D, with the reason,
when it cannot), and publishes ``~/points`` and ``~/markers``.
"""

from __future__ import annotations

from typing import Any

from stamp_ros.ros.camera import Camera
from stamp_ros.spatial import status3d
from stamp_ros.spatial.depth3d import Lift3D, lift_frame, transform_objects

THROTTLE_S = 10.0
"""A missing depth pairing or transform is logged at most this often per cause."""


class ObjectLifter:
    """Lifts a result's masks to 3D for one node (which owns the tf listener, if any)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._tf_buffer: Any = None
        self._tf_listener: Any = None
        self._tf_missing = False

    def _warn(self, text: str) -> None:
        if self._node is not None:
            self._node.get_logger().warning(text, throttle_duration_sec=THROTTLE_S)

    def lift(self, camera: Camera, header: Any, result: Any, *, depth_max_skew: float,
             depth_scale: float, target_frame: str) -> Lift3D:
        """Per instance its 3D summary, or the reason it has none (no depth or intrinsics, no
        depth image within ``depth_max_skew``, too few points, a failed transform). Publishes
        the camera's points and markers when any instance has 3D."""
        lift = self.lift_masks(camera, header, [inst.mask for inst in result.instances],
                               depth_max_skew=depth_max_skew, depth_scale=depth_scale,
                               target_frame=target_frame)
        if lift.any_3d:
            self._publish(camera, header, lift.frame_id, lift.objects, lift.points, result.text)
        return lift

    def lift_masks(self, camera: Camera, header: Any, masks: list, *, depth_max_skew: float,
                   depth_scale: float, target_frame: str,
                   max_pixels: int | None = None) -> Lift3D:
        """:meth:`lift` without publishing (also used for every tracked frame, sampling each
        object on at most ``max_pixels`` depth pixels)."""
        lift = lift_frame(header, masks, list(camera.depth), camera.camera_info,
                          depth_max_skew=depth_max_skew, depth_scale=depth_scale,
                          max_pixels=max_pixels)
        reasons = {r.kind: r.text for r in lift.reasons if r is not None}
        if "depth_skew" in reasons:
            self._warn(f"camera {camera.label}: 3D withheld: {reasons['depth_skew']}")
        if lift.any_3d and target_frame and target_frame != header.frame_id:
            self._to_target_frame(lift, header, target_frame)
        return lift

    def _to_target_frame(self, lift: Lift3D, header: Any, target: str) -> None:
        """Transform through tf2 when it is installed and has the transform; else withhold the
        3D with the reason (a planner that asked for ``target_frame`` must not get camera
        coordinates it could mistake for it)."""
        import rclpy.duration
        import rclpy.time

        buffer = self._buffer()
        if buffer is None:
            reason = status3d.tf_unavailable(target)
            self._warn(f"3D withheld: {reason.text}")
            lift.withhold(reason)
            return
        try:
            tf = buffer.lookup_transform(target, header.frame_id, rclpy.time.Time.from_msg(
                header.stamp), timeout=rclpy.duration.Duration(seconds=0.1))
        except Exception as exc:
            reason = status3d.tf_failure(type(exc).__name__, str(exc), header.frame_id, target)
            self._warn(f"3D withheld: {reason.text}")
            lift.withhold(reason)
            return
        t, q = tf.transform.translation, tf.transform.rotation
        lift.objects, lift.points = transform_objects(lift.objects, lift.points,
                                                      (q.x, q.y, q.z, q.w), (t.x, t.y, t.z))
        lift.frame_id = target

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
