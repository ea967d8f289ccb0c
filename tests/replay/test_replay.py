import pytest

from pipelines.events.files import read_replay
from pipelines.replay.inprocess import fingerprint, replay
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "aug.avro"
    write_recording(generate(library.get("aug-2024")), path)
    return path


def test_in_process_replay_is_deterministic(recording):
    a, b = replay(recording), replay(recording)
    assert fingerprint(a) == fingerprint(b)
    assert a.actions and a.breaches


def test_recording_keeps_keys_partitions_and_per_partition_offsets(recording):
    seen = {}
    for r in read_replay(recording):
        key = (r["topic"], r["partition"])
        assert r["offset"] == seen.get(key, -1) + 1
        seen[key] = r["offset"]
        assert r["key"] and r["timestamp_ms"] == r["event_time_ms"]


@pytest.mark.kafka
@pytest.mark.parametrize("keep_timestamps", [False, True], ids=["replay-time", "recorded-time"])
def test_kafka_replay_preserves_keys_partitions_order_and_times(recording, kafka_bootstrap, topic_factory,
                                                                 keep_timestamps):
    import time

    from confluent_kafka import Consumer

    from pipelines.events.files import write_replay
    from pipelines.replay.kafka_replay import RECORDED_TIMESTAMP_HEADER, replay_to_kafka
    from pipelines.topics import spec_for

    records = list(read_replay(recording))[:3000]
    topics = sorted({r["topic"] for r in records})
    names = {t: topic_factory(partitions=spec_for(t).partitions) for t in topics}
    renamed = [{**r, "topic": names[r["topic"]]} for r in records]
    sub = recording.parent / "sub.avro"
    write_replay(sub, renamed)
    before_ms = int(time.time() * 1000)
    assert replay_to_kafka(sub, {"bootstrap.servers": kafka_bootstrap}, keep_timestamps=keep_timestamps) == len(records)
    after_ms = int(time.time() * 1000)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "replay-test",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(list(names.values()))
    got = []
    deadline = time.monotonic() + 60
    while len(got) < len(records) and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    consumer.close()
    assert len(got) == len(records)
    expected = {}
    for r in renamed:
        expected.setdefault((r["topic"], r["partition"]), []).append((r["key"], r["value"], r["event_time_ms"]))
    actual, stamped = {}, []
    for m in sorted(got, key=lambda m: (m.topic(), m.partition(), m.offset())):
        recorded = int(dict(m.headers())[RECORDED_TIMESTAMP_HEADER])
        actual.setdefault((m.topic(), m.partition()), []).append((m.key(), m.value(), recorded))
        stamped.append(m.timestamp()[1] == recorded if keep_timestamps else before_ms <= m.timestamp()[1] <= after_ms)
    assert actual == expected
    assert all(stamped)  # the replay's own time (so retention counts from now), or the recorded one when asked


def _with_bad_index_prices(recording, tmp_path, prices: list[float]):
    """``recording`` with an IndexPrice of each of ``prices`` inserted after its first index price."""
    from pipelines.events.codec import default_codec
    from pipelines.events.files import replay_record, write_replay

    codec, rows, inserted = default_codec(), [], False
    for r in read_replay(recording):
        rows.append(r)
        decoded = codec.decode(r["value"])
        if not inserted and decoded.record == "IndexPrice":
            inserted = True
            for k, price in enumerate(prices):
                value = {**decoded.value, "price": price}
                rows.append(replay_record(r["topic"], codec.encode("IndexPrice", value), key=r["key"],
                                          partition=r["partition"], offset=10**9 + k,
                                          timestamp_ms=r["timestamp_ms"], event_time_ms=r["event_time_ms"]))
    path = tmp_path / "with-bad.avro"
    write_replay(path, rows, codec=codec)
    return path


def test_records_the_intake_refuses_are_left_out_and_counted_as_its_dead_letters(recording, tmp_path):
    from collections import Counter

    path = _with_bad_index_prices(recording, tmp_path, [0.0, -5.0, float("nan")])
    refused: Counter[str] = Counter()
    out = replay(path, refused=refused)
    assert sum(refused.values()) == 3 and all(reason.startswith("IndexPrice: ") for reason in refused)
    assert fingerprint(out) == fingerprint(replay(recording))  # as if they had never been recorded


def test_the_replay_command_says_what_it_left_out(recording, tmp_path, capsys):
    from pipelines.cli import main

    path = _with_bad_index_prices(recording, tmp_path, [0.0])
    assert main(["replay", "--in-process", str(path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("left out 1 record the worker's intake refuses")
    assert "IndexPrice: " in err[0]
