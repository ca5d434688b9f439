"""``stamp-ros eval``: the engine the node runs, measured the way the paper measures STAMP.

No ROS needed; pycocotools decodes the COCO masks (``pip install 'stamp-ros[eval]'``). The
modules, one job each:

* :mod:`~stamp_ros.eval.cocomask`: COCO polygons and RLE to masks with pycocotools, each
  segmentation validated first (a clear error instead of a crash or garbage pixels).
* :mod:`~stamp_ros.eval.metrics`: the official cIoU / gIoU (overlap and empty-union rules) and
  the extras (no-target accuracy, latency percentiles).
* :mod:`~stamp_ros.eval.samples`: the sample and split types every dataset produces.
* :mod:`~stamp_ros.eval.refer`: RefCOCO/+/g and gRefCOCO in the official layout.
* :mod:`~stamp_ros.eval.labels`, :mod:`~stamp_ros.eval.bag_data`: a robot's own labelled images
  (JSONL) and recorded bags (labels keyed on frame stamps).
* :mod:`~stamp_ros.eval.prompts`: sentence or seeded template prompts; the paper's settings.
* :mod:`~stamp_ros.eval.runner`: one process's samples through the engine, records on disk.
* :mod:`~stamp_ros.eval.records`: the per-sample JSONL (resume, compare).
* :mod:`~stamp_ros.eval.distributed`: torchrun sharding and the gather to rank 0.
* :mod:`~stamp_ros.eval.report`, :mod:`~stamp_ros.eval.published`: summary, paper-style table,
  worst-sample overlays; the published numbers.
* :mod:`~stamp_ros.eval.compare`: two runs side by side.
* :mod:`~stamp_ros.eval.command`: the command line.

May import: :mod:`stamp_ros.bag` (labelled bags), :mod:`stamp_ros.bench` (``machine``), the
engine and everything between; pycocotools. Never rclpy or a message module (import-linter,
``.importlinter``).
"""

from stamp_ros.eval.command import register

__all__ = ["register"]
