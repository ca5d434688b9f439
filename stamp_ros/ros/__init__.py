"""Everything that touches rclpy or ROS message types lives here, never in the engine."""
