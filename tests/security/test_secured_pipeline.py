"""The whole pipeline on secured services: the worker (its group seat, readers, checkpoint store
and sink, all confluent-kafka), the executor and the audit sink reach the broker only through its
SASL/PLAIN listener, configured by environment and a password file alone; an analyst reads the
audit trail with ClickHouse's read-only user and cannot write; no password reaches a log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipelines.audit.store import ServerStore, StoreError
from pipelines.config import load_settings
from pipelines.engine.engine import EngineParams
from pipelines.engine.shard import run_shards
from pipelines.engine.wire import action_record
from pipelines.policy.signing import SigningKey
from pipelines.topics import ACCOUNT_PARTITIONS
from pipelines.topics_cli import create_topics
from tests.kit.probes import stop, wait_for
from tests.kit.worker_processes import SECRET, collect, publish, start_worker

pytestmark = [pytest.mark.security, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow,
              pytest.mark.timeout(600)]

KEY = SigningKey("default", SECRET.encode())
DEEP = {"bids": [{"price": 60_000 - i, "quantity": 50.0} for i in range(1, 40)],
        "asks": [{"price": 60_000 + i, "quantity": 50.0} for i in range(1, 40)]}


def sasl_env(sasl: dict[str, str], prefix: str) -> dict[str, str]:
    """Every Kafka setting a process needs, from the environment; the password only as a file."""
    return {"BACKSTOP_KAFKA_BOOTSTRAP": sasl["bootstrap"], "BACKSTOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "BACKSTOP_KAFKA_SASL_MECHANISM": "PLAIN", "BACKSTOP_KAFKA_SASL_USERNAME": sasl["username"],
            "BACKSTOP_KAFKA_SASL_PASSWORD_FILE": sasl["password_file"], "BACKSTOP_KAFKA_TOPIC_PREFIX": prefix,
            "BACKSTOP_ACTIONS_SIGNING_KEY": SECRET}


def cli(args: list[str], env: dict[str, str], tmp_path: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], env={**os.environ, **env},
                            stdout=open(tmp_path / f"{name}.out", "w"), stderr=open(tmp_path / f"{name}.log", "w"),
                            start_new_session=True, cwd=tmp_path)


def test_pipeline_over_sasl_and_a_read_only_analyst(kafka_sasl, clickhouse_analyst, clickhouse, clickhouse_address,
                                                    tmp_path: Path) -> None:
    password = Path(kafka_sasl["password_file"]).read_text().strip()
    prefix = f"sec{uuid.uuid4().hex[:8]}."
    env = sasl_env(kafka_sasl, prefix)
    settings = load_settings(env=env)
    assert settings.kafka.sasl_password == password and password not in repr(settings)
    client = {k: v for k, v in settings.kafka.confluent_config().items() if k != "bootstrap.servers"}
    bootstrap = kafka_sasl["bootstrap"]

    create_topics(settings.kafka)  # the admin client over SASL
    messages = publish(bootstrap, prefix, client)
    expected = run_shards(messages, ACCOUNT_PARTITIONS, KEY, EngineParams(hedged_accounts=frozenset({"hedged-desk"})))
    expected_actions = {a.action_id: action_record(a) for a in expected.actions}
    assert len(expected_actions) > 10

    host, port = clickhouse_address
    database = clickhouse.connection.database
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps({"books": {"BTC-PERPETUAL": DEEP}}))
    processes = [
        start_worker(bootstrap, prefix, tmp_path, "worker", env=env, idle_ms=2_000),
        cli(["executor", "--venue-config", str(venue), "--ledger", str(tmp_path / "ledger.sqlite"),
             "--instance-id", f"{prefix}exec", "--group", f"{prefix}executors"], env, tmp_path, "executor"),
        cli(["audit-sink", "--clickhouse", f"clickhouse://{host}:{port}/{database}", "--group", f"{prefix}audit",
             "--linger-ms", "200"], env, tmp_path, "sink"),
    ]
    audit = ServerStore(host, port, database=database)
    try:
        actions = collect(bootstrap, f"{prefix}backstop.actions", "Action", "action_id", set(expected_actions),
                          timeout_s=240, client=client)
        reports = collect(bootstrap, f"{prefix}backstop.executions", "ExecutionReport", "action_id",
                          set(expected_actions), timeout_s=120, client={**client, "isolation.level": "read_committed"})

        def stored() -> bool:
            try:
                return audit.count("actions") >= len(expected_actions) and audit.count("executions") >= len(reports)
            except StoreError:
                return False  # the sink has not migrated the database yet
        wait_for(stored, 120, "the audit sink to store every action and execution")
    finally:
        for proc in processes:
            stop(proc)
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert set(actions) == set(expected_actions), {n: text[-1500:] for n, text in logs.items()}
    assert set(reports) == set(expected_actions)  # the executor read and answered every action over SASL
    assert audit.count("actions") == len(expected_actions)
    for name, text in logs.items():
        assert password not in text, f"the SASL password appears in {name}"

    # the analyst: the incident timeline of a liquidated account, read-only
    liquidated = next(a for a in expected.actions if "liquidation" in a.action_type)
    analyst_env = {"BACKSTOP_CLICKHOUSE_USER": clickhouse_analyst["user"],
                   "BACKSTOP_CLICKHOUSE_PASSWORD_FILE": clickhouse_analyst["password_file"]}
    analyst_url = f"clickhouse://{host}:{port}/{database}"
    timeline = subprocess.run([sys.executable, "-m", "pipelines.cli", "incident", "timeline", "--clickhouse",
                               analyst_url, "--account", liquidated.target, "--json"],
                              env={**os.environ, **analyst_env}, capture_output=True, text=True, timeout=120)
    assert timeline.returncode == 0, timeline.stderr
    assert liquidated.action_id in timeline.stdout
    analyst_password = Path(clickhouse_analyst["password_file"]).read_text().strip()
    migrate = subprocess.run([sys.executable, "-m", "pipelines.cli", "audit", "migrate", "--clickhouse", analyst_url],
                             env={**os.environ, **analyst_env}, capture_output=True, text=True, timeout=120)
    assert migrate.returncode != 0 and "readonly" in migrate.stderr.lower(), migrate.stderr
    assert analyst_password not in migrate.stderr + migrate.stdout + timeline.stderr
    as_analyst = ServerStore(host, port, user="analyst", password=analyst_password, database=database)
    with pytest.raises(StoreError, match="(?i)readonly"):
        as_analyst.execute(f"INSERT INTO {database}.actions (action_id) VALUES ('forged')")
    assert audit.count("actions") == len(expected_actions)
    audit.close()
    as_analyst.close()


def test_a_wrong_password_is_refused_and_never_printed(kafka_sasl, clickhouse_analyst, clickhouse_address,
                                                       tmp_path: Path) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    (tmp_path / "wrong").write_text(wrong)
    env = {**sasl_env({**kafka_sasl, "password_file": str(tmp_path / "wrong")}, "nope.")}
    topics = subprocess.run([sys.executable, "-m", "pipelines.cli", "topics", "list"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120)
    assert topics.returncode != 0
    assert "authentication" in topics.stderr.lower(), topics.stderr[-2000:]
    assert wrong not in topics.stderr + topics.stdout

    host, port = clickhouse_address
    timeline = subprocess.run([sys.executable, "-m", "pipelines.cli", "incident", "timeline", "--account", "a",
                               "--clickhouse", f"clickhouse://analyst:{wrong}@{host}:{port}/backstop"],
                              capture_output=True, text=True, timeout=120)
    assert timeline.returncode != 0 and "password" in timeline.stderr.lower(), timeline.stderr
    assert wrong not in timeline.stderr + timeline.stdout
    bad_url = subprocess.run([sys.executable, "-m", "pipelines.cli", "incident", "timeline", "--account", "a",
                              "--clickhouse", f"http://analyst:{wrong}@{host}:{port}/backstop"],
                             capture_output=True, text=True, timeout=120)
    assert bad_url.returncode != 0 and "expected clickhouse://" in bad_url.stderr
    assert wrong not in bad_url.stderr + bad_url.stdout
