"""One torch thread budget for both sides of every bit-for-bit comparison.

torch's CPU kernels split a reduction over their intra-op threads, and the thread count decides
the order in which the partial sums meet. On some CPUs (AMD EPYC with AVX-512 kernels, seen in
CI) one thread and two threads give logits that differ in the last bit; on others (Intel Xeon)
they happen to agree. So "the process hop / the CLI / the eval changes no bit" is a claim about
two computations at the *same* budget, and the tests that make it run their in-process reference
at the budget of the process they compare with, never at torch's default for the test process:

* :func:`torch_threads` sets the test process's budget for a block (and puts it back);
* :func:`with_threads` gives a child process's environment a fixed budget
  (``OMP_NUM_THREADS``: torch reads it at import);
* :data:`NODE_THREADS` is the budget of a node started with ``inference_threads: 0`` (its one
  inference process), computed by the node's own rule.

``pytest --torch-threads N`` starts the test process at N threads, so a run can force a mismatch
with every child on any CPU (docs/performance.md, "What is bit-identical", says how this was
checked).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from stamp_ros.inference.pool import thread_budget

NODE_THREADS = thread_budget(0, 1)
"""torch threads of the inference process of a node with the default ``inference_threads``."""


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads in this process, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def with_threads(env: Mapping[str, str], threads: int) -> dict[str, str]:
    """``env`` for a child process whose torch runs ``threads`` intra-op threads."""
    return {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
