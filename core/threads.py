"""The process's OpenMP wait policy: idle threads sleep instead of spinning, unless the user chose otherwise.

torch and FAISS each load their own libgomp, and by default a libgomp thread that
finishes its share of a parallel region spins for a few milliseconds waiting for
the next one. On a machine with few cores, one runtime's spinning threads take the
cores the other runtime's threads (or a neighbouring process) need, and a
query's encode went from about 10 ms to 260-720 ms on 2 shared cores
(benchmarks/results/query_latency.md: the `default` row). With
``OMP_WAIT_POLICY=PASSIVE`` idle threads wait on a futex instead.

libgomp reads the variable once, when it is loaded (``import torch``, ``import
faiss``), so it has to be in the environment before either: ``import vecguard``
sets it, and only if neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT`` is set
(a user's choice wins). A runtime that was loaded before vecguard keeps the wait
policy it started with; child processes inherit the variable like any other.
The encoder's single-query encodes on one torch thread
(``plugins/sentence_transformers.py``) do not depend on the import order.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"
USER_CHOICES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def prefer_passive_waiting(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a wait policy or spin count; True if it was set."""
    if any(name in environ for name in USER_CHOICES):
        return False
    environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True
