"""The topic catalogue and `backstop topics create` against the real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec

from pipelines.cli import main
from pipelines.errors import UserError
from pipelines.topics import ACCOUNT_PARTITIONS, CATALOGUE
from pipelines.topics_cli import wait_for_leaders


def test_account_keyed_topics_are_co_partitioned() -> None:
    account_topics = [spec for spec in CATALOGUE if spec.key == "account"]
    assert {spec.partitions for spec in account_topics} == {ACCOUNT_PARTITIONS}
    assert len({spec.name for spec in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.kafka
def test_topics_create_is_idempotent(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("BACKSTOP_KAFKA_TOPIC_PREFIX", prefix)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        assert main(["topics", "create", "--bootstrap", kafka_bootstrap]) == 0
        first = capsys.readouterr().out
        assert first.count("created") == len(CATALOGUE)
        # it returned only once every partition's leader serves: producing now cannot meet a
        # leader that is still being elected (and have its refused first writes acked)
        partitions = {TopicPartition(prefix + spec.name, p): OffsetSpec.latest()
                      for spec in CATALOGUE for p in range(spec.partitions)}
        for future in admin.list_offsets(partitions, request_timeout=5).values():
            assert future.result().offset == 0
        assert main(["topics", "create", "--bootstrap", kafka_bootstrap]) == 0
        second = capsys.readouterr().out
        assert second.count("exists") == len(CATALOGUE) and "created" not in second

        topics = admin.list_topics(timeout=10).topics
        for spec in CATALOGUE:
            assert len(topics[prefix + spec.name].partitions) == spec.partitions
        resource = ConfigResource(ConfigResource.Type.TOPIC, prefix + "backstop.exposures")
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        assert config["cleanup.policy"].value == "compact"
    finally:
        names = [prefix + spec.name for spec in CATALOGUE]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - best-effort cleanup of uniquely named topics
                pass


def test_topics_create_without_broker_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "create", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in capsys.readouterr().err


@pytest.mark.kafka
def test_waiting_for_leaders_of_a_missing_topic_names_it(kafka_bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    missing = f"t{uuid.uuid4().hex[:8]}.never-created"
    with pytest.raises(UserError, match=f"without a serving leader after 1 s: {missing}: not in the metadata"):
        wait_for_leaders(admin, [missing], timeout_s=1.0)
