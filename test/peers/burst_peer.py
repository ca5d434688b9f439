"""A planner written with plain rclpy defaults: one service client fires N calls at once.

Nothing of stamp_ros's client and no QoS of its own: ``node.create_client(Segment, ...)`` with
rclpy's default service QoS (keep last 10), as a user who never read our docs writes it. It
waits for the service, fires ``--calls`` requests in one go, spins until every call returned or
``--timeout`` passed, and prints one line ``done {json}``: how many returned, how many
succeeded, the errors of the others.

Usage: burst_peer.py --service /stamp_node/segment --calls 16 --timeout 300
"""

from __future__ import annotations

import argparse
import json
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from stamp_ros.srv import Segment


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", default="/stamp_node/segment")
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("burst_planner")
    client = node.create_client(Segment, args.service)  # rclpy's default QoS, on purpose
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if not client.wait_for_service(timeout_sec=120.0):
            print('done {"error": "no service"}', flush=True)
            return 1
        futures = []
        for i in range(args.calls):
            req = Segment.Request()
            req.query, req.request_id = "segment the square", f"burst-{i}"
            futures.append(client.call_async(req))
        print("fired", flush=True)
        deadline = time.monotonic() + args.timeout
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        results = [f.result().result for f in futures if f.done() and f.result() is not None]
        report = {
            "calls": args.calls,
            "returned": len(results),
            "ok": sum(r.success for r in results),
            "errors": sorted({r.error for r in results if not r.success}),
            "ids": sorted(r.request_id for r in results),
        }
        print("done " + json.dumps(report), flush=True)
        return 0
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
