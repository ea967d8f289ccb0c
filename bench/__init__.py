"""The benchmarks: each script runs by path (``python bench/NAME.py``) and is importable as
``bench.NAME`` from the repository root, as the tests and the other scripts import it."""
