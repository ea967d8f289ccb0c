"""The endpoint over real HTTP: the registry in Prometheus text, liveness, readiness as the shell says."""

from __future__ import annotations

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from pipelines.ops.metrics import Metrics
from pipelines.ops.server import serve
from tests.kit.probes import get, scrape

pytestmark = pytest.mark.ops


def test_metrics_healthz_and_readyz_follow_the_shell() -> None:
    metrics = Metrics("executor")
    metrics.consumed("backstop.actions", 5)
    state = {"ready": False}

    def ready() -> bool:
        if state["ready"] is None:
            raise RuntimeError("consumer closed")
        return state["ready"]

    with serve(0, metrics.registry, ready) as server:
        assert scrape(server.port)[("backstop_events_consumed_total",
                                    (("stage", "executor"), ("topic", "backstop.actions")))] == 5
        metrics.consumed("backstop.actions", 2)  # served live, not a snapshot
        assert scrape(server.port)[("backstop_events_consumed_total",
                                    (("stage", "executor"), ("topic", "backstop.actions")))] == 7
        assert get(server.port, "/healthz") == (200, "ok\n")
        assert get(server.port, "/readyz") == (503, "not ready\n")
        state["ready"] = True
        assert get(server.port, "/readyz") == (200, "ready\n")
        state["ready"] = None  # a probe that raises is not ready, and the endpoint survives it
        assert get(server.port, "/readyz") == (503, "not ready\n")
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/nope")[0] == 404
        port = server.port
    assert get(port, "/healthz")[0] == 0  # closed: nothing listens any more


def test_metrics_content_type_is_prometheus_text() -> None:
    import urllib.request

    with serve(0, Metrics("worker").registry, lambda: True) as server:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics?name[]=x", timeout=5) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
            body = response.read().decode()
    assert "# TYPE backstop_event_to_action_latency_seconds histogram" in body
    assert "process_resident_memory_bytes" in body  # the process's own, from /proc
