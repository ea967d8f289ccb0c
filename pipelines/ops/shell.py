"""What a long-running command does to be observable: its options, its logging, its endpoint.

Every such command (``backstop executor``, ``backstop audit-sink``, the stream worker) takes
``--metrics-port`` and ``--log-format`` over the ``[ops]`` settings and runs its loop inside
``endpoint(...)``::

    ops = shell.configure(args, settings.ops)  # flags over settings; logging set up
    metrics = Metrics("executor", lag_interval_s=ops.lag_interval_s)
    ...
    with shell.endpoint(ops, metrics, ready=executor.ready):
        executor.run()
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from pipelines.config import OpsSettings
from pipelines.errors import UserError
from pipelines.ops import logs
from pipelines.ops.metrics import Metrics
from pipelines.ops.server import serve

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve /metrics, /healthz and /readyz on this port, 0 for none "
                             "(default: settings ops.metrics_port, 0)")
    parser.add_argument("--log-format", choices=logs.FORMATS,
                        help="text, or one JSON object a line (default: settings ops.log_format, text)")


def configure(args: argparse.Namespace, ops: OpsSettings) -> OpsSettings:
    """The command line over the settings; configures logging in the resulting format."""
    given = {"metrics_port": args.metrics_port, "log_format": args.log_format}
    ops = dataclasses.replace(ops, **{k: v for k, v in given.items() if v is not None})
    if not 0 <= ops.metrics_port <= 65535:
        raise UserError(f"metrics port {ops.metrics_port}: expected 0 (off) to 65535")
    logs.configure(ops.log_format)
    return ops


def endpoint(ops: OpsSettings, metrics: Metrics,
             ready: Callable[[], bool]) -> contextlib.AbstractContextManager[object]:
    """The HTTP endpoint for the block's duration, or nothing when ``metrics_port`` is 0."""
    if not ops.metrics_port:
        return contextlib.nullcontext()
    try:
        server = serve(ops.metrics_port, metrics.registry, ready, ops.metrics_host)
    except OSError as exc:
        raise UserError(f"metrics endpoint {ops.metrics_host}:{ops.metrics_port}: {exc.strerror}") from None
    log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", ops.metrics_host, server.port)
    return server
