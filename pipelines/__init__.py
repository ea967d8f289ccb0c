"""Backstop: a streaming risk backstop for crypto options and derivatives.

The package is split by stage of the data flow. ``risk``, ``events`` (pure parts), and the
detection / policy stages form a deterministic core with no I/O; the Kafka, ClickHouse and CLI
shells drive that core.
"""

__version__ = "0.1.0"
