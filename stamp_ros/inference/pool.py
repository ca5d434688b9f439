"""One inference process per device, the CPU thread budget, and the restart record.

The node asks for ``devices: [cuda:0, cuda:1]`` (default: one process on ``device``) and gets
an :class:`InferencePool`: the processes are started together (so their models load in
parallel) and the pool is ready when every one of them is. Which request runs where is the
inference worker's business (least busy first, continuous cameras pinned); the pool only starts,
watches and ends the processes and remembers their restarts for /diagnostics.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from stamp_ros.engine.errors import EngineError
from stamp_ros.inference.protocol import LoadSpec
from stamp_ros.inference.proxy import InferenceProcess, ProcessListener


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_budget(requested: int, processes: int, cores: int | None = None) -> int:
    """torch threads per inference process: ``requested`` when > 0; else all cores but one,
    shared by the processes, at least one each (the node's intake keeps the spare core)."""
    if requested > 0:
        return requested
    cores = available_cores() if cores is None else cores
    return max(1, (cores - 1) // max(1, processes))


class InferencePool:
    """The inference processes of one activation (see the module docstring)."""

    def __init__(self, spec: LoadSpec, devices: Sequence[str], threads: int = 0,
                 listener: ProcessListener | None = None,
                 env: dict[str, str] | None = None, stall_timeout: float = 0.0) -> None:
        if not devices:
            raise ValueError("an inference pool needs at least one device")
        budget = thread_budget(threads, len(devices))
        self.spec = spec
        self.devices = list(devices)
        self.threads = threads
        """As requested (0: the automatic budget, see :func:`thread_budget`)."""
        self._lock = threading.Lock()
        self.processes = [
            InferenceProcess(spec.with_device(device, budget), label=str(i),
                             listener=listener, env=env, stall_timeout=stall_timeout)
            for i, device in enumerate(self.devices)]

    def start(self, timeout: float | None = None) -> float:
        """Start every process and wait until all have loaded; the load time in seconds.
        When one fails, all are closed and :class:`EngineError` names the first reason. A
        process whose load stays silent for its ``stall_timeout`` counts as failed (see
        :class:`InferenceProcess`), so with the watchdog on this never waits for a hung load."""
        t0 = time.monotonic()
        errors: list[str] = []
        threads = [threading.Thread(target=self._start_one, args=(p, timeout, errors),
                                    name=f"stamp-inference-start-{p.label}")
                   for p in self.processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.close()
            raise EngineError(errors[0])
        return time.monotonic() - t0

    def _start_one(self, proc: InferenceProcess, timeout: float | None,
                   errors: list[str]) -> None:
        try:
            proc.start(timeout)
        except Exception as exc:
            prefix = f"inference process on {proc.spec.device}: " if len(self.processes) > 1 \
                else ""
            with self._lock:
                errors.append(f"{prefix}{exc}")

    def close(self) -> None:
        """End every process (each after its running request) and free their slots."""
        threads = [threading.Thread(target=p.close, name=f"stamp-inference-stop-{p.label}")
                   for p in self.processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    @property
    def restarts(self) -> int:
        return sum(p.restarts for p in self.processes)

    @property
    def last_failure(self) -> str:
        """The most recent crash or load failure ("" if none), naming the device when the pool
        has several."""
        failed = [p for p in self.processes if p.last_failure]
        if not failed:
            return ""
        last = max(failed, key=lambda p: p.last_failure_at)
        if len(self.processes) == 1:
            return last.last_failure
        return f"{last.spec.device} ({last.label}): {last.last_failure}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def describe(self) -> str:
        """One line per process state, e.g. ``0: cpu pid 4242 ready``."""
        return "; ".join(f"{p.label}: {p.device} pid {p.pid} {p.state}"
                         for p in self.processes)
