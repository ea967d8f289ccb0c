"""``python -m pipelines.risk.kernels``: compile every kernel into numba's cache (run by infra/install)."""

import time

from pipelines.risk.kernels import warm

started = time.perf_counter()
warm()
print(f"risk kernels compiled: {time.perf_counter() - started:.1f} s")
