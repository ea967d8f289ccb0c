"""Observability of the long-running shells: Prometheus metrics, health endpoints, structured logs."""
