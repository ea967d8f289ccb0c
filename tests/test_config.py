"""Settings: defaults < TOML file < environment; bad values name their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.audit.store import ServerStore
from pipelines.config import load_settings, redact
from pipelines.errors import UserError
from pipelines.kafka import client_config


def test_defaults_point_at_local_infra() -> None:
    settings = load_settings(env={})
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.clickhouse.url == ""  # no server: the embedded store is used


def test_file_then_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "backstop.toml"
    path.write_text('[kafka]\nbootstrap = "k1:9092"\nreplication_factor = 3\n[clickhouse]\nurl = "clickhouse://c:9000"\n')
    from_file = load_settings(path, env={})
    assert (from_file.kafka.bootstrap, from_file.kafka.replication_factor) == ("k1:9092", 3)
    overridden = load_settings(path, env={"BACKSTOP_KAFKA_BOOTSTRAP": "k2:9092",
                                          "BACKSTOP_KAFKA_REPLICATION_FACTOR": "1"})
    assert (overridden.kafka.bootstrap, overridden.kafka.replication_factor) == ("k2:9092", 1)
    assert overridden.clickhouse.url == "clickhouse://c:9000"


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('[kafka]\ntopic_prefix = "staging."\n')
    assert load_settings(env={"BACKSTOP_CONFIG": str(path)}).kafka.topic_prefix == "staging."


def test_secret_from_file_and_sasl_passthrough(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    kafka = load_settings(env={"BACKSTOP_KAFKA_SASL_MECHANISM": "PLAIN", "BACKSTOP_KAFKA_SASL_USERNAME": "u",
                               "BACKSTOP_KAFKA_SASL_PASSWORD_FILE": str(secret),
                               "BACKSTOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}).kafka
    conf = kafka.confluent_config()
    assert conf["sasl.password"] == "s3cret" and conf["security.protocol"] == "SASL_PLAINTEXT"
    client = client_config(kafka)  # what every client (worker, executor, sink, CLI) gets
    fields = ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password")
    assert tuple(client[f] for f in fields) == ("SASL_PLAINTEXT", "PLAIN", "u", "s3cret")
    assert "s3cret" not in repr(kafka)


def test_clients_refuse_a_protocol_they_cannot_speak() -> None:
    assert client_config(load_settings(env={}).kafka)["security.protocol"] == "PLAINTEXT"
    sasl_ssl = client_config(load_settings(env={"BACKSTOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                                "BACKSTOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}).kafka)
    assert (sasl_ssl["security.protocol"], sasl_ssl["sasl.mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    with pytest.raises(UserError, match="security_protocol"):
        client_config(load_settings(env={"BACKSTOP_KAFKA_SECURITY_PROTOCOL": "KERBEROS"}).kafka)


def test_passwords_stay_out_of_reprs_and_messages() -> None:
    settings = load_settings(env={"BACKSTOP_CLICKHOUSE_PASSWORD": "ch-pw", "BACKSTOP_KAFKA_SASL_PASSWORD": "k-pw"})
    assert "ch-pw" not in repr(settings) and "k-pw" not in repr(settings)
    assert redact("clickhouse://reader:hunter2@db:9000/audit") == "clickhouse://reader:***@db:9000/audit"
    assert redact("https://registry:8081") == "https://registry:8081"
    with pytest.raises(UserError) as caught:
        ServerStore.from_url("tcp://reader:hunter2@db:9000/audit")
    assert "hunter2" not in str(caught.value) and "reader:***@db" in str(caught.value)


def test_engine_section_sets_the_engine_and_leaves_the_rest_at_its_defaults(tmp_path: Path) -> None:
    from pipelines.engine.engine import EngineParams

    assert load_settings(env={}).engine.engine_params() == EngineParams()
    path = tmp_path / "engine.toml"
    path.write_text("[engine]\nmargin_trigger_ratio = 1.2\nliquidation_ratio = 1.8\n")
    params = load_settings(path, env={"BACKSTOP_ENGINE_CALL_RATIO": "0.85"}).engine.engine_params(frozenset({"a"}))
    default = EngineParams()
    assert (params.detectors.margin_trigger_ratio, params.detectors.liquidation_ratio) == (1.2, 1.8)
    assert params.ladder.call_ratio == 0.85 and params.hedged_accounts == frozenset({"a"})
    assert params.detectors.margin_clear_ratio == default.detectors.margin_clear_ratio
    assert params.ladder.reduce_ratio == default.ladder.reduce_ratio


@pytest.mark.parametrize(("file_text", "fragment"), [
    ("[engine]\nmargin_trigger_ratio = 0.9\n", "margin_clear_ratio (0.95) must be below margin_trigger_ratio (0.9)"),
    ("[engine]\ncall_ratio = 0.95\n", "call_ratio (0.95) must be at most reduce_ratio (0.9)"),
    ("[engine]\nrelease_ratio = 0.8\n", "release_ratio (0.8) must be below call_ratio (0.8)"),
    ("[engine]\nliquidation_ratio = 0.5\n", "margin_trigger_ratio (1) must be at most liquidation_ratio (0.5)"),
])
def test_engine_levels_out_of_order_are_refused(tmp_path: Path, file_text: str, fragment: str) -> None:
    path = tmp_path / "engine.toml"
    path.write_text(file_text)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_settings(path, env={}).engine.engine_params()


@pytest.mark.parametrize(("env", "file_text", "fragment"), [
    ({"BACKSTOP_KAFKA_REPLICATION_FACTOR": "three"}, None, "BACKSTOP_KAFKA_REPLICATION_FACTOR"),
    ({}, "[engine]\nmargin_trigger_ratio = -1.0\n", "margin_trigger_ratio: expected a ratio above 0"),
    ({}, "[engine]\nreduce_ratio = nan\n", "reduce_ratio: expected a ratio above 0"),
    ({}, "[engine]\nmargin_trigger_ratio = true\n", "margin_trigger_ratio: cannot read True as float"),
    ({}, "[kafka]\nreplication_factor = false\n", "replication_factor: cannot read False as int"),
    ({"BACKSTOP_ENGINE_CALL_RATIO": "high"}, None, "BACKSTOP_ENGINE_CALL_RATIO"),
    ({}, "[kafka]\nbootstrapp = 'x'\n", "bootstrapp"),
    ({}, "[kafak]\n", "kafak"),
    ({}, "[kafka\n", "not valid TOML"),
])
def test_bad_settings_name_the_culprit(tmp_path: Path, env: dict, file_text: str | None, fragment: str) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / "bad.toml"
        path.write_text(file_text)
    with pytest.raises(UserError, match=fragment):
        load_settings(path, env=env)


def test_missing_config_file() -> None:
    with pytest.raises(UserError, match="not found"):
        load_settings("/nonexistent/backstop.toml", env={})
