"""Compiled (numba) kernels of the risk core. Each module keeps its numpy reference beside it
and its tests hold the two to the same results.

``warm()`` compiles every kernel ahead of the first event: an engine that runs the compiled
kernels calls it when it is built, and ``infra/install`` runs ``python -m pipelines.risk.kernels``
so that the machine code is in numba's cache (``cache=True``, beside the sources) before any
process starts; a warm start then loads it in under a second instead of compiling for tens."""

from __future__ import annotations

import functools


@functools.cache
def warm() -> None:
    """Compile (or load from the cache) every kernel, once per process."""
    from pipelines.risk.kernels import planner, revalue, triage

    revalue.warm()
    planner.warm()
    triage.warm()
