"""The framework benchmark's pure parts: one workload with a known number of invalid records, the
same output rule for every contender however it batches, and the summary and decision the rule
gives (figures themselves are never asserted: they live in bench/results/framework.json)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Message

from pipelines.errors import UserError
from pipelines.events.codec import default_codec
from pipelines.events.validation import Validator

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import bench_framework as bf  # noqa: E402

T0_MS = 1_795_000_000_000


def test_the_workload_is_seeded_and_exactly_n_records_long() -> None:
    assert bf.market_records(2_500, T0_MS) == bf.market_records(2_500, T0_MS)
    assert bf.market_records(2_500, T0_MS) != bf.market_records(2_500, T0_MS, seed=8)
    assert len(bf.market_records(2_500, T0_MS)) == 2_500


def test_each_tick_carries_an_index_per_underlying_then_a_mark_and_a_vol_per_option() -> None:
    options = 10
    per_tick = len(bf.SPOT) + 2 * options
    records = bf.market_records(3 * per_tick, T0_MS, options=options)
    counts = Counter(record for _, record, _ in records)
    assert counts == {"IndexPrice": 3 * len(bf.SPOT), "MarkPrice": 3 * options, "VolatilityUpdate": 3 * options}
    assert all(topic == bf.MARKET_TOPICS[record] for topic, record, _ in records)
    assert {value["instrument"] for _, record, value in records if record == "MarkPrice"} == set(
        bf.option_names(options))
    times = sorted({value["event_time_ms"] for _, _, value in records})
    assert times == [T0_MS + k * bf.TICK_MS for k in range(3)]


def test_option_names_are_distinct() -> None:
    assert len(set(bf.option_names(bf.OPTIONS))) == bf.OPTIONS


@pytest.mark.parametrize("n,bad_every", [(5_000, 1_000), (2_345, 100), (99, 1_000)])
def test_decoding_and_validating_the_workload_finds_exactly_its_invalid_records(n: int, bad_every: int) -> None:
    codec = default_codec()
    messages = bf.encoded(bf.market_records(n, T0_MS, bad_every=bad_every), codec)
    assert [codec.key(codec.decode(value).record, codec.decode(value).value) for _, _, value in messages] == [
        key for _, key, _ in messages]
    found = bf.problems_in(codec, Validator(), [value for _, _, value in messages], T0_MS)
    assert found == bf.expected_problems(n, bad_every)


@pytest.mark.parametrize("batches", [[1_000] * 30, [7] * 1_000 + [23_000], [1] * 250 + [99, 101, 29_550]])
def test_one_output_per_every_inputs_however_the_inputs_are_batched(batches: list[int]) -> None:
    seen = outputs = 0
    for size in batches:
        outputs += bf.outputs_due(seen, seen + size)
        seen += size
    assert outputs == seen // bf.OUTPUT_EVERY


def test_commit_offsets_are_one_past_each_partitions_last_message_in_the_batch() -> None:
    batch = [Message(topic="a", partition=0, offset=4), Message(topic="a", partition=1, offset=9),
             Message(topic="a", partition=0, offset=5), Message(topic="b", partition=0, offset=0)]
    assert {(tp.topic, tp.partition, tp.offset) for tp in bf.next_offsets(batch)} == {
        ("a", 0, 6), ("a", 1, 10), ("b", 0, 1)}


def runs(messages: int, seconds: float, cpu_seconds: float) -> dict:
    return {"messages": messages, "problems": 0, "seconds": seconds, "cpu_seconds": cpu_seconds}


def test_the_summary_gives_medians_spreads_and_ratios_of_the_medians() -> None:
    rounds = [{"raw": runs(1_000, s, 0.001), "plain": runs(1_000, 2 * s, 0.01), "faust": runs(1_000, 3 * s, 0.1)}
              for s in (1.0, 2.0, 4.0)]
    summary = bf.summarise(rounds)
    raw = summary["contenders"]["raw"]
    assert raw["msgs_per_s"] == {"median": 500.0, "min": 250.0, "max": 1_000.0}
    assert raw["cpu_us_per_msg"]["median"] == pytest.approx(1.0)
    assert summary["ratios"]["plain_vs_raw"]["of_medians"] == pytest.approx(0.5)
    assert summary["ratios"]["faust_vs_plain"]["of_medians"] == pytest.approx(2 / 3)
    assert summary["ratios"]["faust_vs_plain"]["by_round"]["min"] == pytest.approx(2 / 3)
    assert summary["ratios"]["plain_vs_raw"]["of_cpu_per_msg"] == pytest.approx(0.1)
    assert summary["ratios"]["faust_vs_plain"]["of_cpu_per_msg"] == pytest.approx(0.1)
    assert summary["faust_stays_in_hot_path"] is True


@pytest.mark.parametrize("faust_seconds,stays", [(1.99, True), (2.0, True), (2.01, False)])
def test_faust_stays_in_the_hot_path_only_at_half_the_plain_loop_or_more(faust_seconds: float, stays: bool) -> None:
    rounds = [{"raw": runs(1_000, 0.5, 0.1), "plain": runs(1_000, 1.0, 0.1), "faust": runs(1_000, faust_seconds, 0.1)}]
    assert bf.summarise(rounds)["faust_stays_in_hot_path"] is stays


def test_a_run_that_missed_messages_or_invalid_records_is_named() -> None:
    assert bf.run_problem("plain", {"messages": 100, "problems": 3}, 100, 3) is None
    assert "99 messages" in bf.run_problem("plain", {"messages": 99, "problems": 3}, 100, 3)
    assert "found 2 invalid" in bf.run_problem("faust", {"messages": 100, "problems": 2}, 100, 3)
    assert bf.run_problem("raw", {"messages": 100, "problems": 0}, 100, 3) is None  # raw does not decode


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--messages", "-5"]])
def test_bad_flags_are_one_line_and_a_non_zero_exit(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserError):
        bf.parse_args(argv)
    assert bf.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 1" in err


@pytest.mark.kafka
@pytest.mark.slow
def test_every_contender_does_the_same_work_on_the_broker(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "framework.json"
    assert bf.main(["--bootstrap", kafka_bootstrap, "--messages", "3000", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for name in bf.CONTENDERS:
        (run,) = result["contenders"][name]["runs"]
        assert run["messages"] == 3_000
        assert run["problems"] == (0 if name == "raw" else bf.expected_problems(3_000))
    assert result["faust_stays_in_hot_path"] == (result["ratios"]["faust_vs_plain"]["of_medians"] >= 0.5)
