"""Helpers for the node feature tests (test_node_features.py, test_node_lifecycle.py).

Everything here waits on something observable (a message, a log line, a lifecycle state, a QoS
event); nothing sleeps to let the node "catch up". Short sleeps only pace a poll or a stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node_harness import image_msg, make_frame

NODE = "/stamp_node"
SEGMENT = f"{NODE}/segment"


def make_test_checkpoint(out_dir: Path, **options: Any) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint as make

    return make(out_dir, **options)


def checkpoint_mb(path: Path) -> float:
    """Size of the weight files of a checkpoint directory."""
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) / 2**20




def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               detail: Callable[[], str] = lambda: "") -> Any:
    """Poll ``predicate`` until it returns something truthy (which is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{detail()}")
        time.sleep(0.05)




def get_state(client) -> str:
    from lifecycle_msgs.srv import GetState

    return client.call(GetState, f"{NODE}/get_state", GetState.Request(),
                       timeout=30).current_state.label


def wait_state(client, processes, proc, label: str, timeout: float = 120.0) -> None:
    def reached() -> bool:
        if proc.poll() is not None:
            raise AssertionError("node exited:\n" + processes.output(proc)[-4000:])
        try:
            return get_state(client) == label
        except TimeoutError:
            return False

    wait_until(reached, timeout, f"lifecycle state {label!r}",
               lambda: processes.output(proc)[-4000:])


def change_state(client, transition_id: int) -> bool:
    from lifecycle_msgs.srv import ChangeState

    req = ChangeState.Request()
    req.transition.id = transition_id
    return client.call(ChangeState, f"{NODE}/change_state", req, timeout=120).success


def _parameter(name: str, value: Any):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue

    v = ParameterValue()
    if isinstance(value, bool):
        v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, int):
        v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
    elif isinstance(value, float):
        v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
    elif isinstance(value, str):
        v.type, v.string_value = ParameterType.PARAMETER_STRING, value
    else:
        v.type, v.string_array_value = ParameterType.PARAMETER_STRING_ARRAY, list(value)
    return Parameter(name=name, value=v)


def set_params(client, **values: Any) -> list[Any]:
    """Set node parameters one by one; returns their SetParametersResult."""
    from rcl_interfaces.srv import SetParameters

    req = SetParameters.Request(parameters=[_parameter(k, v) for k, v in values.items()])
    return client.call(SetParameters, f"{NODE}/set_parameters", req, timeout=30).results


def set_ok(client, **values: Any) -> None:
    for (name, value), res in zip(values.items(), set_params(client, **values), strict=True):
        assert res.successful, f"setting {name}={value!r} was refused: {res.reason}"


class Caller:
    """One persistent Segment service client (a new client per call costs a discovery round)."""

    def __init__(self, client, name: str = SEGMENT) -> None:
        from stamp_ros.srv import Segment

        self._client = client.node.create_client(Segment, name)
        assert self._client.wait_for_service(timeout_sec=60), f"{name} not available"

    def __call__(self, query: str = "segment the square", image: Any = None, camera: str = "",
                 request_id: str = "", timeout: float = 120.0) -> Any:
        from ros_client import wait_future
        from stamp_ros.srv import Segment

        req = Segment.Request()
        req.query, req.camera, req.request_id = query, camera, request_id
        if image is not None:
            req.image = image
        return wait_future(self._client.call_async(req), timeout).result


def inline(rgb=None, stamp_sec: int = 1, stamp_nanosec: int = 0, frame_id: str = "cam"):
    return image_msg(make_frame() if rgb is None else rgb, stamp_sec=stamp_sec,
                     frame_id=frame_id, stamp_nanosec=stamp_nanosec)


def mask_bytes(inst: Any) -> bytes:
    return bytes(inst.mask.data)


def diag_values(arr: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in arr.status[0].values}


@contextmanager
def streaming(pub, rgb, rate_hz: float = 10.0, first_stamp: int = 1000,
              frame_id: str = "cam") -> Iterator[list[int]]:
    """Publish frames (stamps first_stamp, first_stamp + 1, ...) from a thread until the block
    ends; yields the list of stamps sent so far."""
    stop = threading.Event()
    sent: list[int] = []

    def run() -> None:
        while not stop.is_set():
            stamp = first_stamp + len(sent)
            pub.publish(image_msg(rgb, stamp_sec=stamp, frame_id=frame_id))
            sent.append(stamp)
            stop.wait(1.0 / rate_hz)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(timeout=10)


def wait_diag(diags, what: str, predicate: Callable[[dict[str, str]], Any],
              timeout: float = 60.0) -> dict[str, str]:
    """The values of the first /diagnostics report received for which ``predicate`` holds."""
    try:
        hit = diags.wait_for(1, timeout=timeout, where=lambda a: predicate(diag_values(a)))
    except TimeoutError:
        last = diag_values(diags.messages[-1]) if diags.messages else {}
        raise AssertionError(f"no /diagnostics report with {what}; last: {last}") from None
    return diag_values(hit[0])
