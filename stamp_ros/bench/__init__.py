"""``stamp-ros bench``: what a request costs, and what the node's own per-frame work costs, as JSON.

Two measurements behind one command, each printing ONE JSON object on stdout (and to ``--out``):

* the engine benchmark (default): per-stage latency of the fast and the reference path, end-to-end
  percentiles, continuous-mode throughput and memory growth over a soak, on a random-weight
  model with a real architecture (see :mod:`stamp_ros.bench.engine_bench`);
* ``--node-overhead``: the node's CPU work per camera frame outside the model (image conversion,
  result/mask/overlay messages), on a 1080p frame (see :mod:`stamp_ros.bench.node_overhead`).

The modules, one job each: ``command`` (arguments, dispatch, output), ``inputs`` (model shapes,
scripted answers, frames), ``node_messages`` (the node's message work around a request),
``requests`` (timed requests, per-case statistics, continuous mode), ``soak`` (memory growth),
``machine`` (device and versions), ``goals`` (pass/fail against the targets in bench/README.md).

May import every layer below the command line (the node's messages and the engine among them,
:mod:`stamp_ros.testing` for the random-weight models); nothing imports it but
:mod:`stamp_ros.cli` and :mod:`stamp_ros.eval` (``machine``) (import-linter, ``.importlinter``).
"""

from stamp_ros.bench.command import register

__all__ = ["register"]
