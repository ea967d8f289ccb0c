"""The command-line side: settings < flags, port checks, the endpoint off at port 0."""

from __future__ import annotations

import argparse
import socket

import pytest

from pipelines.config import OpsSettings, load_settings
from pipelines.errors import UserError
from pipelines.ops import shell
from pipelines.ops.metrics import Metrics
from tests.kit.ports import free_ports
from tests.kit.probes import get

pytestmark = [pytest.mark.ops, pytest.mark.usefixtures("root_logging")]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    shell.add_arguments(parser)
    return parser.parse_args(argv)


def test_settings_from_environment_and_flags_over_them() -> None:
    ops = load_settings(env={"BACKSTOP_OPS_METRICS_PORT": "9464", "BACKSTOP_OPS_LOG_FORMAT": "json",
                             "BACKSTOP_OPS_LAG_INTERVAL_S": "0.5"}).ops
    assert (ops.metrics_port, ops.log_format, ops.lag_interval_s, ops.metrics_host) == (9464, "json", 0.5, "127.0.0.1")
    assert shell.configure(parse(), ops) == ops
    assert shell.configure(parse("--metrics-port", "0", "--log-format", "text"), ops) == \
        OpsSettings(metrics_port=0, log_format="text", lag_interval_s=0.5)
    assert load_settings(env={}).ops.metrics_port == 0  # off unless asked for


def test_bad_port_and_busy_port_are_user_errors() -> None:
    with pytest.raises(UserError, match="70000"):
        shell.configure(parse("--metrics-port", "70000"), OpsSettings())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UserError, match=str(busy.getsockname()[1])):
            shell.endpoint(OpsSettings(metrics_port=busy.getsockname()[1]), Metrics("executor"), lambda: True)


def test_port_zero_serves_nothing_and_a_port_serves_until_the_block_ends() -> None:
    with shell.endpoint(OpsSettings(metrics_port=0), Metrics("executor"), lambda: True) as server:
        assert server is None
    port = free_ports()
    with shell.endpoint(OpsSettings(metrics_port=port), Metrics("executor"), lambda: True):
        assert get(port, "/readyz") == (200, "ready\n")
    assert get(port, "/healthz")[0] == 0
