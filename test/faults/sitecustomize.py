"""Loaded by Python's site machinery in every process whose PYTHONPATH starts with this folder
(``node_harness.fault_env``): with ``STAMP_ROS_FAULT_INJECTION=1`` it installs the test faults
(:mod:`injected_faults`) into the process's engine. Nothing like it ships with stamp_ros."""

import os

if os.environ.get("STAMP_ROS_FAULT_INJECTION") == "1":
    import injected_faults

    injected_faults.install()
