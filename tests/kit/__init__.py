"""The shared test kit. Import it as ``tests.kit.NAME``:

- ``books``: portfolios from their legs, random portfolios from a seeded generator;
- ``markets``: a fixed BTC/ETH market for risk tests;
- ``crash``: a scripted crash as ``(record, value)`` events, for engine, worker and stream tests;
- ``records``: one valid sample of every record type;
- ``incident``: a small liquidation incident as decoded records, for audit tests;
- ``fakes``: a consumed message and a consumer over a fixed queue, for loops run without a broker;
- ``probes``: HTTP gets, Prometheus samples, JSON log lines, waiting for and stopping processes;
- ``ports``: free ports below the ephemeral range for services a test starts;
- ``worker_processes``: ``backstop worker`` processes on the real broker, and what they emit.

Helpers one folder alone uses stay in it (``tests/worker/cluster.py``, ``tests/chaos/harness.py``,
``tests/fuzz/strategies.py``, ``tests/audit/stores.py``)."""
