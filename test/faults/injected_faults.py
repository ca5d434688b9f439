"""Failures injected into a real inference process, for the tests of the recovery paths.

Nothing of this ships: the package has no fault hook. A test that wants faults starts the node
(or an inference process) with this folder (``test/faults``) at the front of ``PYTHONPATH`` and
``STAMP_ROS_FAULT_INJECTION=1`` (``node_harness.fault_env``); Python's site machinery then runs
``sitecustomize.py`` here in that process and in every process it starts, which calls
:func:`install`. From then on, a query containing one of these markers fails inside the
inference process when the request reaches the mask stage (after decoding):

* ``[[raise]]``: a RuntimeError (an error result, the process keeps serving);
* ``[[oom]]``: a torch.cuda.OutOfMemoryError (the same, with the CUDA cache freed);
* ``[[crash]]``: the process kills itself with SIGKILL (the node answers "inference process
  died: signal 9 ...", restarts it and serves the next request);
* ``[[abort]]``: ``os.abort()`` (SIGABRT, like an assertion in a native extension);
* ``[[exit]]``: ``os._exit(3)`` (an extension calling exit()).
* ``[[hang]]``: the process blocks for good, silent (a deadlocked kernel or driver call): the
  node kills it after ``inference_stall_timeout`` and restarts it.

Loading and warming up have no query, so their faults come from the environment (read here,
in the test tree, never by stamp_ros). Each variable is ``1`` (always) or the path of a file
(only while that file exists, so a test can let the first load pass and make a restart fail):

* ``STAMP_ROS_FAULT_LOAD_HANG``: ``StampSegmenter.from_pretrained`` blocks for good, silent;
* ``STAMP_ROS_FAULT_LOAD_SLOW``: the path of a file holding seconds: while it exists, the load
  first polls for that long (a slow load that is alive, like one waiting for another process's
  download lock);
* ``STAMP_ROS_FAULT_LOAD_HOLD``: the path of a file: the load waits, polling, while it exists
  (the test decides when "during the load" ends: test_node_activation.py);
* ``STAMP_ROS_FAULT_WARMUP_HANG``: ``StampSegmenter.warmup`` blocks for good, silent.

How: when ``stamp_ros.engine.segmenter`` is imported (only the inference process and an
in-process engine do), ``StampSegmenter.segment`` is wrapped so that its progress callback
raises (or dies of) the fault the query asks for at the mask stage, and ``from_pretrained`` and
``warmup`` so that they hang (or wait) as the environment asks.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Progress = Callable[[str, str], None]

SEGMENTER = "stamp_ros.engine.segmenter"


def _fail(query: str) -> None:
    if "[[raise]]" in query:
        raise RuntimeError("injected failure in the middle of inference")
    if "[[oom]]" in query:
        import torch

        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    if "[[crash]]" in query:
        os.kill(os.getpid(), signal.SIGKILL)
    if "[[abort]]" in query:
        os.abort()
    if "[[exit]]" in query:
        os._exit(3)
    if "[[hang]]" in query:
        threading.Event().wait()


def inject(query: str, progress: Progress | None) -> Progress | None:
    """The engine progress callback to use for ``query``: ``progress`` itself unless the query
    names a fault, else a wrapper that raises (or dies of) that fault at the mask stage."""
    if "[[" not in query:
        return progress

    def hook(stage: str, text: str) -> None:
        if stage == "mask":
            _fail(query)
        if progress is not None:
            progress(stage, text)

    return hook


def _asked(variable: str) -> bool:
    """Whether the environment asks for the fault ``variable`` now (``1``, or its file exists)."""
    value = os.environ.get(variable, "")
    return value == "1" or (value not in ("", "0") and os.path.exists(value))


def _hang_if(variable: str) -> None:
    if _asked(variable):
        threading.Event().wait()  # blocked for good, silent, no CPU: a hung call


def _slow_if(variable: str) -> None:
    path = os.environ.get(variable, "")
    if path and os.path.exists(path):
        with open(path, encoding="ascii") as seconds:
            end = time.monotonic() + float(seconds.read())
        while time.monotonic() < end:
            time.sleep(0.05)


def _hold_while(variable: str) -> None:
    path = os.environ.get(variable, "")
    while path and os.path.exists(path):
        time.sleep(0.05)


def _wrap(segmenter_class: type) -> None:
    segment = segmenter_class.segment
    load = segmenter_class.__dict__["from_pretrained"].__func__
    warmup = segmenter_class.warmup

    @functools.wraps(load)
    def from_pretrained_with_faults(cls: type, *args: Any, **kwargs: Any) -> Any:
        _hang_if("STAMP_ROS_FAULT_LOAD_HANG")
        _slow_if("STAMP_ROS_FAULT_LOAD_SLOW")
        _hold_while("STAMP_ROS_FAULT_LOAD_HOLD")
        return load(cls, *args, **kwargs)

    @functools.wraps(warmup)
    def warmup_with_faults(self: Any, *args: Any, **kwargs: Any) -> Any:
        _hang_if("STAMP_ROS_FAULT_WARMUP_HANG")
        return warmup(self, *args, **kwargs)

    segmenter_class.from_pretrained = classmethod(from_pretrained_with_faults)
    segmenter_class.warmup = warmup_with_faults

    @functools.wraps(segment)
    def segment_with_faults(self: Any, image: Any, query: str, *args: Any,
                            progress: Progress | None = None, **kwargs: Any) -> Any:
        return segment(self, image, query, *args, progress=inject(query, progress), **kwargs)

    segmenter_class.segment = segment_with_faults


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Lets :data:`SEGMENTER` load as usual, then wraps its ``StampSegmenter.segment``."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != SEGMENTER:
            return None
        sys.meta_path.remove(self)  # one module, once: find the real spec without us
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            load(module)
            _wrap(module.StampSegmenter)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Inject faults into this process's engine (now if it is loaded, else when it loads)."""
    module = sys.modules.get(SEGMENTER)
    if module is not None:
        _wrap(module.StampSegmenter)
    else:
        sys.meta_path.insert(0, _WrapOnImport())
