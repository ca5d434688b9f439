"""Loading the model without holding the executor: ``activate`` as a background load.

A lifecycle transition runs on the executor, and loading a model (a fresh interpreter, torch,
the weights: 10 s for the tiny test model on a busy 2-core machine, minutes for 7B from disk)
would hold the node's only executor thread the whole time: no frame, query, call, parameter
change or ``get_state`` answered meanwhile, while lifecycle managers and their bond timeouts
expect a responsive node. So an activation is split in two:

* :class:`ModelLoad` starts the inference processes on a thread of its own and creates the
  request worker at once, with every lane still loading: requests queue (bounded by
  ``max_pending``) and are served when the model is ready, or answered with the load's error
  when it fails; frames keep arriving in the camera caches;
* the transition itself runs when the load is over, so its result still says whether the model
  loaded. :func:`activate_in_background` makes the node's ``change_state`` service a coroutine
  that awaits the load before it triggers ``activate``, in a callback group of its own (a
  second transition waits for the first; nothing else does), and run_node starts the node the
  same way (:meth:`ModelLoad.finished`).

A direct ``trigger_activate()`` still works: it waits for the load on the calling thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from lifecycle_msgs.msg import Transition
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.task import Future

from stamp_ros.inference.pool import InferencePool
from stamp_ros.inference.scheduler import InferenceWorker
from stamp_ros.ros.model_processes import ModelProcesses

__all__ = ["ModelLoad", "activate_in_background"]


class ModelLoad:
    """One load of the model on its own thread, and the worker that queues requests meanwhile."""

    def __init__(self, model: ModelProcesses,
                 new_worker: Callable[[InferencePool], InferenceWorker]) -> None:
        self.pool = model.prepare()
        self.worker = new_worker(self.pool)
        self.error = ""
        """Why the model did not load ("" when it did)."""
        self._model = model
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        threading.Thread(target=self._load, name="stamp-model-load", daemon=True).start()

    def _load(self) -> None:
        try:
            self._model.load(self.pool)
        except Exception as exc:  # the reason goes to the activate result and the requests
            self.error = str(exc) or type(exc).__name__
        self._done.set_result(None)

    def wait(self) -> None:
        """Block until the load is over (a direct ``trigger_activate``)."""
        self._done.result()

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loading thread, or now) once the load is over."""
        self._done.add_done_callback(lambda _future: callback())

    async def finished(self, wake: Any) -> None:
        """Yield the executor until the load is over; ``wake`` (a guard condition of the node)
        resumes the awaiting coroutine at once (ros2/rclpy#1462)."""
        future: Future = Future()

        def done() -> None:
            future.set_result(None)
            if wake is not None:
                with contextlib.suppress(Exception):  # destroyed by a cleanup meanwhile
                    wake.trigger()

        self.when_done(done)
        await future


def _activates(request: Any) -> bool:
    transition = request.transition
    return (transition.id == Transition.TRANSITION_ACTIVATE
            or transition.label == "activate")


def activate_in_background(node: Any, load: Callable[[], Awaitable[None]]) -> None:
    """Make ``node``'s lifecycle ``change_state`` service await ``load()`` before an
    ``activate`` transition runs (``load`` decides whether anything needs loading)."""
    service = getattr(node, "_service_change_state", None)
    if service is None:  # built without the lifecycle services
        return
    transition = service.callback
    group = MutuallyExclusiveCallbackGroup()  # transitions one at a time, nothing else waits
    group.add_entity(service)
    service.callback_group = group

    async def change_state(request: Any, response: Any) -> Any:
        if _activates(request):
            await load()
        return transition(request, response)

    service.callback = change_state
