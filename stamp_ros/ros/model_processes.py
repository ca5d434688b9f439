"""The node's inference processes: what they load, starting and ending them, what they report.

:class:`ModelProcesses` is the node's side of :mod:`stamp_ros.inference`: it turns the
``[reload]`` parameters into a :class:`~stamp_ros.inference.protocol.LoadSpec` per device,
prepares and loads the :class:`~stamp_ros.inference.pool.InferencePool` on activate (or keeps the
one that deactivate left running for the same model; :mod:`stamp_ros.ros.activation` loads it
on a thread of its own), forwards the live settings, and hears the
processes' events on their reader threads: a crash stops the worker's lane (what waited there is
answered with the reason), a restart brings it back, and both are counted for /diagnostics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stamp_ros.inference.pool import InferencePool
from stamp_ros.inference.protocol import LoadSpec
from stamp_ros.inference.proxy import InferenceProcess
from stamp_ros.inference.scheduler import InferenceWorker
from stamp_ros.pipeline.params import LIVE_PROCESS_SETTINGS

__all__ = ["ModelProcesses"]


class ModelProcesses:
    """The inference processes of one node (see the module docstring)."""

    def __init__(self, param: Callable[[str], Any], logger: Any,
                 worker: Callable[[], InferenceWorker | None]) -> None:
        self._param = param
        self._log = logger
        self._worker = worker
        self.pool: InferencePool | None = None
        """The loaded processes (None until a load has finished)."""
        self._loading: InferencePool | None = None
        self.restarts = 0
        """Crashes that were followed by a restart, since the node started."""
        self.last_failure = ""

    # ------------------------------------------------------------------ start and end
    def load_spec(self) -> tuple[LoadSpec, list[str], int]:
        """What the inference processes load (the [reload] parameters), on which devices, with
        how many threads each."""
        param = self._param
        refine = param("refine")
        device = str(param("device"))
        spec = LoadSpec(
            model=str(param("model")), device=device, dtype=param("dtype"),
            min_pixels=param("min_pixels"), max_pixels=param("max_pixels"),
            max_new_tokens=param("max_new_tokens"), mask_upsample=param("mask_upsample"),
            refine=None if refine == "none" else refine,
            sam_checkpoint=param("sam_checkpoint") or None,
            system_prompt=param("system_prompt"), nice=int(param("inference_nice")))
        devices = [str(d).strip() or device for d in param("devices")] or [device]
        return spec, devices, int(param("inference_threads"))

    def prepare(self) -> InferencePool:
        """The pool to activate: the running one when deactivate kept it for the same model,
        else a new one, not started yet (:meth:`load` starts it)."""
        spec, devices, threads = self.load_spec()
        pool = self.pool
        if pool is not None:
            same = (pool.spec, pool.devices, pool.threads) == (spec, devices, threads)
            if same and all(p.state == "ready" for p in pool.processes):
                self._apply_live_settings(pool)
                return pool
            self.close()
        pool = InferencePool(spec, devices, threads, listener=self)
        self._apply_live_settings(pool)
        self._loading = pool
        return pool

    def load(self, pool: InferencePool) -> None:
        """Start ``pool`` and wait until every process has loaded the model (raises
        :class:`~stamp_ros.engine.errors.EngineError` naming the first failure); a kept pool
        is ready already."""
        if pool is self.pool:
            return
        t0 = time.monotonic()
        try:
            pool.start()
        finally:
            self._loading = None
        self.pool = pool
        self._log.info(f"loaded {pool.spec.model} in {time.monotonic() - t0:.1f} s in "
                       f"{len(pool.devices)} inference process(es): {pool.describe()}")

    def close(self) -> None:
        """End every process (the model's memory is returned), a pool still loading too."""
        loading, self._loading = self._loading, None
        if loading is not None:
            loading.close()
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()
            self._log.info("inference processes ended")

    def set_live(self, name: str, value: Any) -> None:
        """A live parameter changed: the processes take it with their next request."""
        attribute = LIVE_PROCESS_SETTINGS.get(name)
        for pool in (self.pool, self._loading):
            if attribute is not None and pool is not None:
                for proc in pool.processes:
                    setattr(proc, attribute, value)

    def _apply_live_settings(self, pool: InferencePool) -> None:
        for proc in pool.processes:
            for param, attribute in LIVE_PROCESS_SETTINGS.items():
                setattr(proc, attribute, self._param(param))

    # ------------------------------------------------------------------ for /diagnostics
    def describe(self) -> str:
        return self.pool.describe() if self.pool is not None else "none"

    def none_serving(self) -> bool:
        """A pool whose every process is down (crashed, restarting)."""
        pool = self.pool
        return pool is not None and all(p.state != "ready" for p in pool.processes)

    # ------------------------------------------------------------------ the processes' events
    # Called on the processes' reader threads (the pool's listener).
    def on_down(self, proc: InferenceProcess, reason: str, restarting: bool) -> None:
        """A process ended: stop feeding it (with no process left, what waits gets ``reason``);
        count a crash for /diagnostics."""
        pool = self.pool
        if proc.state == "closed" or pool is None or proc not in pool.processes:
            return  # ended on purpose, or activate is starting it (and reports a failure)
        if restarting:
            self.restarts += 1
        self.last_failure = reason
        self._log.error(f"inference process {proc.label} ({proc.device}, pid {proc.pid}): "
                        f"{reason}")
        worker = self._worker()
        if worker is not None:
            worker.lane_down(int(proc.label), reason, coming_back=restarting)

    def on_up(self, proc: InferenceProcess) -> None:
        """A restarted process has loaded the model: it serves again."""
        if proc.restarts == 0:
            return  # the first load: activate reports it
        self._log.info(f"inference process {proc.label} ({proc.device}, pid {proc.pid}) "
                       f"serves again after restart {proc.restarts}")
        worker = self._worker()
        if worker is not None:
            worker.lane_up(int(proc.label))

    def on_warm(self, proc: InferenceProcess, times_ms: dict[str, float], error: str) -> None:
        """First-request latency (kernel selection, allocator growth, lazy init) is paid by
        the warm-up in the process right after loading; a failure only costs speed."""
        if error:
            self._log.warning(f"model warm-up failed: {error}")
        else:
            self._log.info(f"warm-up done in {sum(times_ms.values()) / 1000.0:.1f} s "
                           f"(inference process {proc.label})")
