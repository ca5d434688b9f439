"""Entry points: what a person or a launch file starts.

* :mod:`~stamp_ros.cli.main`: the ``stamp-ros`` command (``python -m stamp_ros.cli``): the
  subcommand registry, ``segment`` and ``make-test-checkpoint``; ``bench``, ``bag``, ``eval``,
  ``demo`` and ``doctor`` register from their own modules.
* :mod:`~stamp_ros.cli.demo`: ``stamp-ros demo`` (the node, a camera stream, one request).
* :mod:`~stamp_ros.cli.doctor`: ``stamp-ros doctor`` (verdicts, report, exit code; the data
  model is :mod:`stamp_ros.diagnosis.probe`, the measurement :mod:`stamp_ros.ros.doctor_probe`).
* :mod:`~stamp_ros.cli.run_node`: the node's process (``ros2 run stamp_ros stamp_node``, the
  launch file, ``python -m stamp_ros.cli.run_node``), with :mod:`~stamp_ros.cli.malloc` (glibc
  tuning) and :mod:`~stamp_ros.cli.dds_profile` (the shipped Fast DDS profile).

The top layer: it may import every other part of stamp_ros and nothing imports it (checked by
import-linter, ``.importlinter``). ``main`` is re-exported here: ``stamp_ros.cli:main`` is the
console script.
"""

from stamp_ros.cli.main import main

__all__ = ["main"]
