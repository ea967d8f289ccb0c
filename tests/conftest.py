"""Fixtures for tests that talk to the real services.

Where a service comes from, in order:
1. an address in the environment (``BACKSTOP_TEST_KAFKA_BOOTSTRAP``, ``BACKSTOP_TEST_CLICKHOUSE``
   as ``host:port`` of the native protocol);
2. the project's ``docker-compose.yml`` through pytest-docker, when a Docker engine answers;
3. the local processes of ``infra/local up`` (127.0.0.1:9092 and 127.0.0.1:9000 by default).

A missing service skips the test with the reason, except under ``CI=true``, where it fails:
a green CI run always means the real broker and server were exercised.

The secured endpoints (the broker's SASL/PLAIN listener, ClickHouse's read-only ``analyst``)
come from ``BACKSTOP_TEST_KAFKA_SASL_BOOTSTRAP`` + ``BACKSTOP_TEST_KAFKA_SASL_PASSWORD_FILE`` and
``BACKSTOP_TEST_CLICKHOUSE_ANALYST_PASSWORD_FILE``, else from what ``infra/local up`` made (its
SASL port and the password files in its ``secrets/`` folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import clickhouse_driver

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def service_missing(reason: str) -> None:
    """Skip outside CI; fail under CI=true, so CI can never go green without the service."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: tests that need a service fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """pytest-docker: the project's own compose file (the full stack)."""
    return str(REPO / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"backstop-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    """pytest-docker: start only the services the tests need, not the project's workers."""
    return ["up --build -d kafka clickhouse"]


def _kafka_answers(bootstrap: str) -> str | None:
    """None if a broker answers at ``bootstrap``, else the reason it does not."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    except KafkaException as exc:
        return exc.args[0].str()
    return None


def _clickhouse_answers(host: str, port: int) -> str | None:
    from clickhouse_driver import Client
    from clickhouse_driver.errors import Error

    try:
        Client(host=host, port=port, connect_timeout=3).execute("SELECT 1")
    except (Error, OSError, EOFError) as exc:
        return str(exc).splitlines()[0]
    return None


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """``host:port`` of a real Kafka broker."""
    bootstrap = os.environ.get("BACKSTOP_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap and _docker_engine_answers():
        services = request.getfixturevalue("docker_services")
        bootstrap = f"{request.getfixturevalue('docker_ip')}:{services.port_for('kafka', 9092)}"
        services.wait_until_responsive(lambda: _kafka_answers(bootstrap) is None, timeout=120, pause=1)
    bootstrap = bootstrap or f"127.0.0.1:{os.environ.get('BACKSTOP_KAFKA_PORT', '9092')}"
    problem = _kafka_answers(bootstrap)
    if problem:
        service_missing(f"no Kafka broker at {bootstrap} ({problem}); start one with `infra/local up`")
    return bootstrap


@pytest.fixture(scope="session")
def clickhouse_address(request: pytest.FixtureRequest) -> tuple[str, int]:
    """(host, native port) of a real ClickHouse server."""
    address = os.environ.get("BACKSTOP_TEST_CLICKHOUSE")
    if not address and _docker_engine_answers():
        services = request.getfixturevalue("docker_services")
        address = f"{request.getfixturevalue('docker_ip')}:{services.port_for('clickhouse', 9000)}"
        host, port = address.rsplit(":", 1)
        services.wait_until_responsive(lambda: _clickhouse_answers(host, int(port)) is None, timeout=120, pause=1)
    address = address or f"127.0.0.1:{os.environ.get('BACKSTOP_CLICKHOUSE_PORT', '9000')}"
    host, port = address.rsplit(":", 1)
    problem = _clickhouse_answers(host, int(port))
    if problem:
        service_missing(f"no ClickHouse server at {address} ({problem}); start one with `infra/local up`")
    return host, int(port)


@pytest.fixture
def clickhouse(clickhouse_address: tuple[str, int]) -> Iterator[clickhouse_driver.Client]:
    """A clickhouse-driver client on a fresh database of its own, dropped afterwards."""
    from clickhouse_driver import Client

    host, port = clickhouse_address
    database = f"test_{uuid.uuid4().hex[:12]}"
    admin = Client(host=host, port=port)
    admin.execute(f"CREATE DATABASE {database}")
    client = Client(host=host, port=port, database=database)
    try:
        yield client
    finally:
        client.disconnect()
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Creates fresh uuid-named topics on the real broker; deletes them afterwards. They keep
    their messages whatever their timestamps (``retention.ms`` -1): tests write fixed event times,
    and a broker deletes messages older than a topic's retention at its next check."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "test", config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                      config={"retention.ms": "-1", **(config or {})})])[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    _delete_topics(admin, created)


def _delete_topics(admin, names: list[str]) -> None:
    """Best effort: the names are unique to their test anyway."""
    for future in (admin.delete_topics(names, operation_timeout=30).values() if names else ()):
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - cleanup must not fail a test that passed
            pass


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh topic prefix with the whole catalogue created under it, as ``backstop topics
    create`` does; afterwards every topic under the prefix is deleted, the workers' own
    (changelogs, assignor) too. A broker holding the topics of every test before it slowed
    down and ran out of heap in long local runs."""
    from confluent_kafka.admin import AdminClient

    from pipelines.config import KafkaSettings
    from pipelines.topics_cli import create_topics

    prefix = f"t{uuid.uuid4().hex[:8]}."
    create_topics(KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix))
    yield prefix
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    _delete_topics(admin, [topic for topic in admin.list_topics(timeout=30).topics if topic.startswith(prefix)])


def _infra_secret(name: str) -> Path:
    return Path(os.environ.get("BACKSTOP_INFRA_DIR", REPO / ".infra")) / "secrets" / name


@pytest.fixture(scope="session")
def kafka_sasl() -> dict[str, str]:
    """The broker's SASL_PLAINTEXT/PLAIN listener: ``bootstrap``, ``username``, ``password_file``."""
    from confluent_kafka.admin import AdminClient

    bootstrap = os.environ.get("BACKSTOP_TEST_KAFKA_SASL_BOOTSTRAP",
                               f"127.0.0.1:{os.environ.get('BACKSTOP_KAFKA_SASL_PORT', '9192')}")
    password_file = Path(os.environ.get("BACKSTOP_TEST_KAFKA_SASL_PASSWORD_FILE",
                                        _infra_secret("kafka-backstop.password")))
    if not password_file.exists():
        service_missing(f"no SASL password file {password_file}; `infra/local up` makes one")
    sasl = {"bootstrap": bootstrap, "username": os.environ.get("BACKSTOP_TEST_KAFKA_SASL_USERNAME", "backstop"),
            "password_file": str(password_file)}
    try:
        AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                     "sasl.username": sasl["username"], "sasl.password": password_file.read_text().strip()}
                    ).list_topics(timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure means the listener is not usable
        service_missing(f"no SASL/PLAIN Kafka listener at {bootstrap} ({exc}); start one with `infra/local up`")
    return sasl


@pytest.fixture(scope="session")
def clickhouse_analyst(clickhouse_address: tuple[str, int]) -> dict[str, str]:
    """ClickHouse's read-only user: ``user`` and ``password_file``."""
    from clickhouse_driver import Client
    from clickhouse_driver.errors import Error

    password_file = Path(os.environ.get("BACKSTOP_TEST_CLICKHOUSE_ANALYST_PASSWORD_FILE",
                                        _infra_secret("clickhouse-analyst.password")))
    if not password_file.exists():
        service_missing(f"no ClickHouse analyst password file {password_file}; `infra/local up` makes one")
    host, port = clickhouse_address
    try:
        Client(host=host, port=port, user="analyst", password=password_file.read_text().strip(),
               connect_timeout=3).execute("SELECT 1")
    except (Error, OSError, EOFError) as exc:
        service_missing(f"ClickHouse at {host}:{port} has no read-only user analyst ({str(exc).splitlines()[0]})")
    return {"user": "analyst", "password_file": str(password_file)}


_RECOVERIES: list[str] = []


@pytest.fixture
def recovery_report() -> Callable[[str, float, str], None]:
    """``report(fault, seconds, counts)``: a fault test's recovery time and the counts that show
    nothing was lost, printed together at the end of the run (``chaos recovery``)."""
    def report(fault: str, recovery_s: float, counts: str) -> None:
        _RECOVERIES.append(f"{fault:<40} recovered in {recovery_s:6.1f} s   {counts}")
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _RECOVERIES:
        terminalreporter.section("chaos recovery")
        for line in _RECOVERIES:
            terminalreporter.write_line(line)
