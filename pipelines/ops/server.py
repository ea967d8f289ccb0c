"""``/metrics``, ``/healthz`` and ``/readyz`` from one small stdlib HTTP thread.

- ``/metrics``: the process's registry in the Prometheus text format (``generate_latest``).
- ``/healthz``: 200 whenever the thread answers. Liveness means "the process is alive"; a
  consumer that is alive but stuck shows in ``/readyz`` and in the lag, and restarting it would
  only move its partitions around.
- ``/readyz``: 200 when the ``ready`` callable the shell supplies returns true, else 503. The
  shell decides what ready means (the executor: joined its group; the sink: joined and the
  store reachable). A ``ready`` that raises counts as not ready.

One thread, requests served one at a time: a scrape is a few kilobytes, and a single thread
cannot compete with the consumer loop for the interpreter. Each connection has a timeout, so a
client that stops reading cannot hold the endpoint.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class _Server(http.server.HTTPServer):
    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        super().__init__(address, _Handler)
        self.registry = registry
        self.ready = ready


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0

    def do_GET(self) -> None:  # the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ready = self._ready()
            self._reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _ready(self) -> bool:
        try:
            return bool(self.server.ready())
        except Exception as exc:  # noqa: BLE001 - a failing probe is an unready process, not a dead endpoint
            log.debug("readiness probe failed: %s", exc)
            return False

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the stdlib's signature
        log.debug("%s " + format, self.address_string(), *args)  # scrapes every few seconds: not INFO


class MetricsServer:
    """The running endpoint; ``close()`` (or leaving the ``with`` block) stops it."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        self._httpd = _Server((host, port), registry, ready)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when asked for port 0)."""
        return self._httpd.server_address[1]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(port: int, registry: CollectorRegistry, ready: Callable[[], bool], host: str = "127.0.0.1") -> MetricsServer:
    """Start serving ``registry`` and ``ready`` on ``host:port`` (port 0: any free port)."""
    return MetricsServer(host, port, registry, ready)
