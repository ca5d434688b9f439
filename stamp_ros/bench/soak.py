"""Memory growth over many consecutive requests: the leak check of the engine benchmark.

A node runs for days; a few kilobytes kept per request (a cache that never forgets, a tensor held
by a closure) only show after thousands of requests. The soak runs ``n`` fresh-frame requests
after a warm-up and compares the current (not the peak) host RSS and CUDA allocation before and
after.
"""

from __future__ import annotations

import gc
import resource
from time import perf_counter

from stamp_ros.bench.inputs import QUERY
from stamp_ros.bench.node_messages import NodeMessages
from stamp_ros.bench.requests import percentiles, request


def rss_mb() -> float:
    """Current resident set size (not the peak), so growth over a soak is visible."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cuda_mb(device) -> float | None:
    """Memory allocated by tensors on a CUDA ``device`` (MiB); None for other devices."""
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return round(torch.cuda.memory_allocated(device) / 2**20, 1)


def soak(seg, ros: NodeMessages, msgs: list, n: int, max_s: float | None = None) -> dict:
    """``n`` consecutive fresh-frame requests: does host RSS or CUDA memory keep growing?"""
    import torch

    def stamp_frame(i: int):
        return msgs[i % len(msgs)]

    request(seg, ros, stamp_frame(0), QUERY, "fast")
    gc.collect()
    start = {"rss_mb": rss_mb(), "cuda_allocated_mb": cuda_mb(seg.device)}
    t0 = perf_counter()
    e2e = []
    for i in range(n):
        e2e.append(request(seg, ros, stamp_frame(i + 1), QUERY, "fast")[1]["e2e"])
        if max_s is not None and perf_counter() - t0 > max_s:
            break
    wall = perf_counter() - t0
    gc.collect()
    end = {"rss_mb": rss_mb(), "cuda_allocated_mb": cuda_mb(seg.device)}
    out = {
        "requests": len(e2e),
        "requested": n,
        "start": start,
        "end": end,
        "rss_growth_mb": round(end["rss_mb"] - start["rss_mb"], 1),
        "e2e_ms": percentiles(e2e) if e2e else None,
        "wall_s": round(wall, 2),
    }
    if seg.device.type == "cuda":
        out["cuda_growth_mb"] = round(end["cuda_allocated_mb"] - start["cuda_allocated_mb"], 1)
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(seg.device) / 2**20, 1)
    return out
