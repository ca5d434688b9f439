"""Shared fixtures: an isolated ROS domain per test and processes that never outlive a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Humble asserts message field types on every assignment; Jazzy and later only with this set.
# Setting it before any message module is imported makes these tests as strict as Humble.
os.environ.setdefault("ROS_PYTHON_CHECK_FIELDS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--torch-threads", type=int, default=0, metavar="N",
        help="start the test process's torch at N intra-op threads (default: torch's own "
             "choice); a budget unlike every child's proves the bit-for-bit comparisons run "
             "their references at the child's budget (test/thread_budget.py)")


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("--torch-threads")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which machine ran this: on some CPUs a thread count moves a float's last bit."""
    import torch

    from stamp_ros.bench.machine import cpu_model
    from stamp_ros.inference.pool import available_cores

    return [f"machine: {cpu_model()}, {available_cores()} cores; torch "
            f"{torch.get_num_threads()} intra-op threads in the test process"]


def _ros_available() -> bool:
    try:
        import rclpy  # noqa: F401
        from stamp_ros.msg import Segmentation  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def ros_env() -> Iterator[dict[str, str]]:
    """Environment for child processes: a domain id no other test or process holds (never 0)."""
    if not _ros_available():
        pytest.skip("rclpy or the stamp_ros interfaces are not installed (run scripts/setup)")
    from domain_coordinator import domain_id

    from stamp_ros.cli.dds_profile import large_image_env

    with domain_id() as did:
        env = dict(os.environ)
        # The shipped large-image profile in every process, as docs/robot.md tells robots to do.
        env.update(large_image_env())
        env.update(
            ROS_DOMAIN_ID=str(did),
            # Kilted reads the first, Humble/Jazzy the second: keep test traffic on this host.
            ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
            ROS_LOCALHOST_ONLY="1",
            ROS_PYTHON_CHECK_FIELDS="1",
            PYTHONUNBUFFERED="1",
            AMENT_PREFIX_PATH=sys.prefix,
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        )
        yield env


class ProcessGroup:
    """Child processes started by one test; all of them are stopped when the test ends."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *args: str, name: str = "proc", env: dict[str, str] | None = None):
        log = self.log_dir / f"{name}-{len(self.procs)}.log"
        fh = log.open("w")
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=env or self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
            start_new_session=True,
        )
        fh.close()
        self.procs.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        for p, log in self.procs:
            if p is proc:
                return log.read_text(errors="replace")
        raise KeyError(proc)

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # DDS can wedge and ignore SIGINT/SIGTERM: never let a child outlive the test.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture
def processes(ros_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(ros_env, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def ros_client(ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """The test process's own rclpy context in the test's domain (see ros_client.py)."""
    from stamp_ros.cli.dds_profile import PROFILE_VARIABLES

    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY",
                *PROFILE_VARIABLES):
        if key in ros_env:
            monkeypatch.setenv(key, ros_env[key])
    from ros_client import RosClient

    client = RosClient(int(ros_env["ROS_DOMAIN_ID"]))
    try:
        yield client
    finally:
        client.close()
