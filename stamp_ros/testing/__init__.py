"""Scaffolding that runs outside the test suite too: tiny real checkpoints and synthetic inputs.

The hub is unreachable on the machines this was built on, so the CLI's ``make-test-checkpoint``,
``stamp-ros bench`` and the demo's offline fallback need a generated model at run time, and the
tests need the same one. It lives here, beside the engine rather than in it, so nothing under
``stamp_ros.engine`` or ``stamp_ros.ros`` ever depends on test scaffolding:

* :mod:`stamp_ros.testing.checkpoint`: ``make_test_checkpoint`` and ``TinyShape`` (random
  weights, real architecture, optionally a scripted answer).
* :mod:`stamp_ros.testing.images`: ``sample_image`` and ``array_to_image_msg`` (any encoding
  and byte layout).

What only the tests use (e.g. the PEFT adapter maker) lives in ``test/``.

May import: the engine, :mod:`stamp_ros.ros.kit` (image messages of any layout), the tracker;
torch and ROS messages (it is scaffolding, not part of the node's path). Only the command line,
the benchmarks and the tests import it (import-linter, ``.importlinter``).
"""
