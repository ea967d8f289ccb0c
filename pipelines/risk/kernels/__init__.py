"""Compiled (numba) kernels of the risk core. Each module keeps its numpy reference beside it
and its tests hold the two to the same results; ``warm()`` of each compiles its kernels ahead
of the first event (``cache=True`` keeps the machine code between processes)."""
