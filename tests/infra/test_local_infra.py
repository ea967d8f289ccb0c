"""infra/local: the real services start, answer foreign clients, stop without leftovers, and
bad configuration gets a one-line cause and a non-zero exit.

Each test uses its own state folder and ports, so it never touches the services the rest of the
suite runs on.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kit.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "infra" / "local"


def run_local(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LOCAL), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """Environment for an infra/local of its own: private state folder and free ports."""
    env = dict(os.environ)
    env.update({
        "BACKSTOP_INFRA_DIR": str(tmp_path / "infra"),
        "BACKSTOP_KAFKA_PORT": str(free_ports(3)),
        "BACKSTOP_KAFKA_CONTROLLER_PORT": str(free_ports(3)),
        "BACKSTOP_KAFKA_SASL_PORT": str(free_ports(3)),
        "BACKSTOP_CLICKHOUSE_PORT": str(free_ports()),
        "BACKSTOP_CLICKHOUSE_HTTP_PORT": str(free_ports()),
        "BACKSTOP_KAFKA_HEAP": "256m",
    })
    return env


def pids_of(env: dict[str, str]) -> list[int]:
    pid_dir = Path(env["BACKSTOP_INFRA_DIR"]) / "pids"
    return [int(p.read_text().split()[0]) for p in pid_dir.glob("*.pid")]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.clickhouse
def test_up_is_idempotent_foreign_clients_see_services_and_down_leaves_nothing(isolated_env: dict[str, str]) -> None:
    env = isolated_env
    try:
        first = run_local("up", env=env)
        assert first.returncode == 0, first.stderr
        kafka_address = f"127.0.0.1:{env['BACKSTOP_KAFKA_PORT']}"
        assert kafka_address in first.stdout
        assert f"127.0.0.1:{env['BACKSTOP_CLICKHOUSE_PORT']}" in first.stdout
        started = sorted(pids_of(env))
        assert len(started) == 2

        again = run_local("up", env=env)
        assert again.returncode == 0, again.stderr
        assert sorted(pids_of(env)) == started, "a second `up` must not start new processes"

        assert run_local("status", env=env).returncode == 0
        if shutil.which("kcat"):
            listing = subprocess.run(["kcat", "-b", kafka_address, "-L"], capture_output=True, text=True, timeout=30)
            assert f"broker 0 at {kafka_address}" in listing.stdout
        answer = subprocess.run(["clickhouse-client", "--port", env["BACKSTOP_CLICKHOUSE_PORT"], "-q", "SELECT 1"],
                                capture_output=True, text=True, timeout=30)
        assert answer.stdout.strip() == "1", answer.stderr

        # the secured doors: SASL/PLAIN on the SASL port, a read-only ClickHouse user; their
        # passwords made for this state folder, readable by its owner alone, never printed
        secrets = Path(env["BACKSTOP_INFRA_DIR"]) / "secrets"
        kafka_password = (secrets / "kafka-backstop.password").read_text()
        analyst_password = (secrets / "clickhouse-analyst.password").read_text()
        assert {oct(p.stat().st_mode & 0o777) for p in secrets.iterdir()} == {"0o600"}
        assert kafka_password not in first.stdout + first.stderr and analyst_password not in first.stdout
        from confluent_kafka.admin import AdminClient
        sasl = {"bootstrap.servers": f"127.0.0.1:{env['BACKSTOP_KAFKA_SASL_PORT']}",
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "backstop"}
        assert AdminClient({**sasl, "sasl.password": kafka_password}).list_topics(timeout=30).brokers
        with pytest.raises(Exception, match="(?i)transport|authentication"):
            AdminClient({**sasl, "sasl.password": "not-it"}).list_topics(timeout=5)
        read_only = ["clickhouse-client", "--port", env["BACKSTOP_CLICKHOUSE_PORT"], "--user", "analyst",
                     "--password", analyst_password]
        assert subprocess.run([*read_only, "-q", "SELECT 2"], capture_output=True, text=True,
                              timeout=30).stdout.strip() == "2"
        refused = subprocess.run([*read_only, "-q", "CREATE DATABASE nope"], capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and "readonly" in refused.stderr.lower()
    finally:
        stopped = run_local("down", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(running(pid) for pid in started)
    assert run_local("status", env=env).returncode == 3


@pytest.mark.slow
@pytest.mark.kafka
def test_three_broker_cluster_on_consecutive_ports(isolated_env: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient

    env = isolated_env
    base = int(env["BACKSTOP_KAFKA_PORT"])
    try:
        result = run_local("up", "--brokers", "3", "--only", "kafka", env=env)
        assert result.returncode == 0, result.stderr
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{base}"})
        deadline = time.monotonic() + 30  # a just-started broker reaches the metadata a moment later
        while True:
            ports = sorted(b.port for b in admin.list_topics(timeout=30).brokers.values())
            if ports == [base, base + 1, base + 2] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ports == [base, base + 1, base + 2]
        changed = run_local("up", "--brokers", "1", "--only", "kafka", env=env)
        assert "infra/local down" in one_line_error(changed)
    finally:
        assert run_local("down", env=env).returncode == 0


def test_port_in_use_is_reported(isolated_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        isolated_env["BACKSTOP_CLICKHOUSE_PORT"] = str(squatter.getsockname()[1])
        message = one_line_error(run_local("up", "--only", "clickhouse", env=isolated_env, timeout=60))
    assert f"port {isolated_env['BACKSTOP_CLICKHOUSE_PORT']}" in message and "in use" in message
    assert pids_of(isolated_env) == []


def test_missing_java_is_reported(isolated_env: dict[str, str], tmp_path: Path) -> None:
    isolated_env["PATH"] = str(tmp_path / "empty-bin")
    message = one_line_error(run_local("up", "--only", "kafka", env=isolated_env, timeout=60))
    assert "java is not installed" in message


def test_missing_clickhouse_server_is_reported(isolated_env: dict[str, str]) -> None:
    isolated_env["BACKSTOP_CLICKHOUSE_SERVER"] = "clickhouse-server-that-is-not-installed"
    message = one_line_error(run_local("up", "--only", "clickhouse", env=isolated_env, timeout=60))
    assert "is not installed" in message


@pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven to show its offline failure")
def test_maven_offline_without_cache_is_reported(isolated_env: dict[str, str], tmp_path: Path) -> None:
    # real Maven, offline, with an empty local repository: nothing to resolve the broker from
    isolated_env["BACKSTOP_MAVEN_ARGS"] = f"-o -Dmaven.repo.local={tmp_path / 'empty-m2'}"
    try:
        message = one_line_error(run_local("up", "--only", "kafka", env=isolated_env, timeout=300))
    finally:
        run_local("down", env=isolated_env)
    assert "Maven could not fetch the Kafka jars" in message
