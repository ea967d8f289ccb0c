"""Executors on the real broker: exactly once across a SIGKILL, forged actions rejected, the
waterfall's fills adding up, transient venue outages retried, fills at the market topics' depth
and mark."""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from pipelines.engine.wire import record_target
from pipelines.events.codec import default_codec
from pipelines.execution.executor import Executor, ExecutorConfig
from pipelines.execution.market import MARKET_RECORDS, MarketFeed
from pipelines.execution.venue import SimulatedVenue, SimulatedVenueConfig
from pipelines.execution.waterfall import WaterfallParams
from pipelines.policy.actions import ActionType
from pipelines.policy.circuit import TradingState
from pipelines.policy.signing import SigningKey
from tests.kit.actions import signed

pytestmark = pytest.mark.kafka

SECRET = "executor-test-signing-key-0123456789"
KEY = SigningKey("default", SECRET.encode())
DEEP = {"instrument": "BTC-PERPETUAL", "bids": [{"price": 60_000 - i, "quantity": 50.0} for i in range(1, 40)],
        "asks": [{"price": 60_000 + i, "quantity": 50.0} for i in range(1, 40)]}


def produce_actions(bootstrap: str, prefix: str, actions: list[dict]) -> None:
    codec = default_codec()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for action in actions:
        producer.produce(f"{prefix}backstop.actions", key=record_target(action).encode(),
                         value=codec.encode("Action", action))
    assert producer.flush(30) == 0


def read_topic(bootstrap: str, topic: str, record: str, until: int, timeout_s: float = 60.0) -> list[dict]:
    """Committed records on ``topic`` (read_committed), waiting until ``until`` are there."""
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < until and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    out.append(codec.decode(m.value(), expected=record).value)
    finally:
        consumer.close()
    return out


def executor_config(prefix: str) -> ExecutorConfig:
    return ExecutorConfig(f"{prefix}backstop.actions", f"{prefix}backstop.executions", f"{prefix}backstop.deadletters")


def in_process_executor(bootstrap: str, prefix: str, venue: SimulatedVenue, key: SigningKey = KEY) -> Executor:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}executors", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{prefix}exec-test"})
    return Executor(consumer, producer, default_codec(), venue, key, executor_config(prefix))


def hedge(i: int) -> dict:
    return signed(KEY, ActionType.DELTA_HEDGE, f"acct-{i % 30}", 1_795_000_000_000 + i,
                  instrument="BTC-PERPETUAL", side="buy" if i % 2 else "sell", quantity=0.1 + i / 1000,
                  limit_price=None, breach_ids=[f"b{i}"])


@pytest.mark.slow
@pytest.mark.chaos
def test_two_executors_and_a_sigkill_execute_every_action_exactly_once(kafka_bootstrap: str, prefix: str,
                                                                      tmp_path: Path, recovery_report) -> None:
    venue_file = tmp_path / "venue.json"
    venue_file.write_text(json.dumps({"books": {"BTC-PERPETUAL": DEEP}, "latency_s": 0.02}))
    ledger = tmp_path / "ledger.sqlite"
    actions = [hedge(i) for i in range(240)]
    produce_actions(kafka_bootstrap, prefix, actions)
    env = dict(os.environ, BACKSTOP_ACTIONS_SIGNING_KEY=SECRET, BACKSTOP_KAFKA_TOPIC_PREFIX=prefix)

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "executor", "--venue-config", str(venue_file), "--ledger",
             str(ledger), "--instance-id", f"{prefix}{name}", "--group", f"{prefix}executors", "--bootstrap",
             kafka_bootstrap, "--batch-size", "20"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "ab"), start_new_session=True)

    executors = {"e1": start("e1"), "e2": start("e2")}
    try:
        reports = read_topic(kafka_bootstrap, f"{prefix}backstop.executions", "ExecutionReport", until=40, timeout_s=60)
        assert len(reports) >= 40, (tmp_path / "e1.log").read_text()[-2000:]
        os.killpg(executors["e1"].pid, signal.SIGKILL)  # mid-stream, most likely mid-batch
        executors["e1"].wait()
        killed = time.monotonic()
        executors["e1"] = start("e1")  # same transactional id: fences the dead one's open transaction
        reports = read_topic(kafka_bootstrap, f"{prefix}backstop.executions", "ExecutionReport",
                             until=len(actions), timeout_s=120)
        finished = time.monotonic() - killed
    finally:
        for proc in executors.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
    counts = collections.Counter(r["action_id"] for r in reports)
    assert set(counts) == {a["action_id"] for a in actions}
    assert set(counts.values()) == {1}, [a for a, n in counts.items() if n > 1][:5]
    with sqlite3.connect(ledger) as db:
        (orders,), = db.execute("SELECT count(*) FROM orders").fetchall()
        positions = dict(db.execute("SELECT account, quantity FROM positions").fetchall())
    assert orders == len(actions)
    expected: dict[str, float] = collections.defaultdict(float)
    for a in actions:
        expected[a["account"]] += a["quantity"] if a["side"] == "buy" else -a["quantity"]
    assert positions == pytest.approx(dict(expected))
    recovery_report("executor SIGKILLed (1 of 2)", finished,
                    f"{len(actions)} actions: {orders} venue orders, {len(counts)} reports, each once")


def test_forged_action_is_rejected_dead_lettered_and_never_executed(kafka_bootstrap: str, prefix: str,
                                                                    tmp_path: Path) -> None:
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEEP}), tmp_path / "ledger.sqlite")
    forged = signed(SigningKey("default", b"attacker-key-0123456789"), ActionType.DELTA_HEDGE, "victim",
                    1_795_000_000_000, instrument="BTC-PERPETUAL", side="sell", quantity=100.0)
    tampered = {**hedge(1), "quantity": 500.0}
    produce_actions(kafka_bootstrap, prefix, [forged, tampered, hedge(2)])
    stats = in_process_executor(kafka_bootstrap, prefix, venue).run(idle_exit_s=3)
    assert (stats.actions, stats.rejected, stats.dead_lettered) == (3, 2, 2)
    reports = {r["action_id"]: r for r in read_topic(kafka_bootstrap, f"{prefix}backstop.executions",
                                                     "ExecutionReport", until=3)}
    assert reports[forged["action_id"]]["status"] == "rejected"
    assert reports[forged["action_id"]]["reason"].startswith("bad_signature")
    assert reports[hedge(2)["action_id"]]["status"] == "filled"
    letters = read_topic(kafka_bootstrap, f"{prefix}backstop.deadletters", "DeadLetter", until=2)
    assert [d["reason"] for d in letters] == ["bad_signature", "bad_signature"]
    assert venue.order(forged["action_id"]) is None and venue.order(tampered["action_id"]) is None
    assert venue.positions("victim") == {}


def test_thin_book_liquidation_goes_book_lp_fund_adl_and_adds_up(kafka_bootstrap: str, prefix: str,
                                                                  tmp_path: Path) -> None:
    mark = 100.0
    config = SimulatedVenueConfig.from_json({
        "books": {"ALT-PERPETUAL": {"bids": [{"price": mark - 0.5 * i, "quantity": 2.0} for i in range(1, 5)],
                                    "asks": [{"price": mark + 0.5 * i, "quantity": 2.0} for i in range(1, 5)]}},
        "lps": [{"lp_id": "lp-1", "capacity_usd": 2_500.0, "per_minute_usd": 100_000.0, "discount": 0.03},
                {"lp_id": "lp-2", "capacity_usd": 1_500.0, "per_minute_usd": 100_000.0, "discount": 0.04}],
        "insurance_fund_usd": 150.0,
        "adl_candidates": {"ALT-PERPETUAL": [{"account": "short-winner", "quantity": -500.0, "avg_price": 130.0,
                                              "equity_usd": 5_000.0}]},
        "waterfall": {"max_clips": 4},
    })
    venue = SimulatedVenue(config, tmp_path / "ledger.sqlite")
    venue.seed_position("bankrupt", "ALT-PERPETUAL", 100.0)
    action = signed(KEY, ActionType.FULL_LIQUIDATION, "bankrupt", 1_795_000_000_000, instrument="ALT-PERPETUAL",
                    side="sell", quantity=100.0, params={"mark": str(mark), "equity_usd": "-300"})
    produce_actions(kafka_bootstrap, prefix, [action])
    in_process_executor(kafka_bootstrap, prefix, venue).run(idle_exit_s=3)
    reports = read_topic(kafka_bootstrap, f"{prefix}backstop.executions", "ExecutionReport", until=4)
    by_venue: dict[str, float] = collections.defaultdict(float)
    for r in reports:
        by_venue[r["venue"]] += r["filled_quantity"]
    assert list(by_venue) == ["simulated", "lp", "insurance_fund", "adl"]
    assert sum(by_venue.values()) == pytest.approx(100.0)
    assert by_venue["lp"] == pytest.approx(40.0)
    assert venue.insurance_fund_usd == pytest.approx(0.0)
    assert venue.positions("bankrupt") == {}


def test_transient_outage_is_retried_and_executes_once(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEEP}, outage_calls=3), tmp_path / "l.sqlite")
    produce_actions(kafka_bootstrap, prefix, [hedge(7)])
    stats = in_process_executor(kafka_bootstrap, prefix, venue).run(idle_exit_s=3)
    assert stats.aborted_batches == 0 and stats.reports == 1
    reports = read_topic(kafka_bootstrap, f"{prefix}backstop.executions", "ExecutionReport", until=1)
    assert [r["status"] for r in reports] == ["filled"]


def test_transfer_with_no_backstop_provider_still_reports_what_became_of_it(kafka_bootstrap: str, prefix: str,
                                                                            tmp_path: Path) -> None:
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEEP}), tmp_path / "l.sqlite")  # no LPs
    venue.seed_position("levered", "BTC-PERPETUAL", 3.0)
    action = signed(KEY, ActionType.TRANSFER_TO_LP, "levered", 1_795_000_000_000, instrument="BTC-PERPETUAL",
                    side="sell", quantity=3.0, params={"mark": "60000", "equity_usd": "1000"})
    produce_actions(kafka_bootstrap, prefix, [action])
    stats = in_process_executor(kafka_bootstrap, prefix, venue).run(idle_exit_s=3)
    assert stats.reports == 1
    [report] = read_topic(kafka_bootstrap, f"{prefix}backstop.executions", "ExecutionReport", until=1)
    assert (report["action_id"], report["status"], report["filled_quantity"]) == (action["action_id"], "rejected", 0.0)
    assert "no counterparty in lp: 3 left" in report["reason"]
    assert venue.positions("levered") == {"BTC-PERPETUAL": 3.0}


def test_every_action_gets_an_outcome(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEEP}, waterfall=WaterfallParams(max_clips=2)),
                           tmp_path / "l.sqlite")
    venue.seed_position("big", "BTC-PERPETUAL", 5_000.0)  # more than two clips of the book take
    t = 1_795_000_000_000
    actions = {
        "accepted": [signed(KEY, ActionType.MARGIN_CALL, "a", t), signed(KEY, ActionType.REDUCE_ONLY, "a", t),
                     signed(KEY, ActionType.HALT, "ETH", t, instrument="ETH-PERPETUAL"),
                     signed(KEY, ActionType.RESUME, "ETH", t, instrument="ETH-PERPETUAL")],
        "filled": [hedge(3)],
        "partially_filled": [signed(KEY, ActionType.PARTIAL_LIQUIDATION, "big", t, instrument="BTC-PERPETUAL",
                                    side="sell", quantity=5_000.0,
                                    params={"mark": "60000", "equity_usd": "1e9"})],
        "rejected": [signed(KEY, ActionType.DELTA_HEDGE, "a", t, instrument="BTC-PERPETUAL", side="buy",
                            quantity=1.0, limit_price=50_000.0)],
    }
    produce_actions(kafka_bootstrap, prefix, [a for group in actions.values() for a in group])
    in_process_executor(kafka_bootstrap, prefix, venue).run(idle_exit_s=3)
    reports = read_topic(kafka_bootstrap, f"{prefix}backstop.executions", "ExecutionReport", until=8)
    statuses = collections.defaultdict(set)
    for r in reports:
        statuses[r["action_id"]].add(r["status"])
    for status, group in actions.items():
        for action in group:
            assert statuses[action["action_id"]] == {status}, action["action_type"]
    assert all(r["reason"] for r in reports if r["status"] == "rejected")



def test_halt_reduce_only_and_resume_actions_set_the_venue_state_and_refuse_new_risk(
        kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    """The circuit's actions through the executor on the real broker: a halt then a market_reduce_only
    (one underlying, one partition, in order) leave the venue reduce-only; there a hedge adding to a
    position is refused with a reason and one reducing it fills; a resume lifts the restriction."""
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEEP}), tmp_path / "l.sqlite")
    venue.seed_position("long", "BTC-PERPETUAL", 2.0)
    t = 1_795_000_000_000

    def circuit(kind: ActionType, state: str, minute: int) -> dict:
        return signed(KEY, kind, "BTC", t + minute * 60_000, breach_ids=["move"],
                      params={"underlying": "BTC", "level": "1", "state": state})

    def execute(actions: list[dict]) -> None:
        produce_actions(kafka_bootstrap, prefix, actions)
        in_process_executor(kafka_bootstrap, prefix, venue).run(idle_exit_s=3)

    execute([circuit(ActionType.HALT, "halted", 1), circuit(ActionType.MARKET_REDUCE_ONLY, "reducing", 3)])
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.REDUCING
    adds, exits = [signed(KEY, ActionType.DELTA_HEDGE, "long", t + 240_000, instrument="BTC-PERPETUAL",
                          side=side, quantity=1.0, breach_ids=[side]) for side in ("buy", "sell")]
    execute([adds, exits])
    assert venue.positions("long") == {"BTC-PERPETUAL": 1.0}
    execute([circuit(ActionType.RESUME, "active", 61)])
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.ACTIVE
    reports = {r["action_id"]: r for r in read_topic(kafka_bootstrap, f"{prefix}backstop.executions",
                                                    "ExecutionReport", until=5)}
    assert reports[adds["action_id"]]["status"] == "rejected"
    assert "reduce-only" in reports[adds["action_id"]]["reason"]
    assert reports[exits["action_id"]]["status"] == "filled"
    assert len(reports) == 5 and sum(r["status"] == "accepted" for r in reports.values()) == 3




T0 = 1_795_000_000_000


def depth(mid: float, t: int) -> dict:
    """Ten levels a side, 10 bp apart, 5 contracts each, around ``mid``."""
    return {"instrument": "BTC-PERPETUAL",
            "bids": [{"price": mid * (1 - 0.001 * i), "quantity": 5.0} for i in range(1, 11)],
            "asks": [{"price": mid * (1 + 0.001 * i), "quantity": 5.0} for i in range(1, 11)], "bands": [],
            "sequence": t, "event_time_ms": t}


def mark(price: float, t: int) -> dict:
    return {"instrument": "BTC-PERPETUAL", "underlying": "BTC", "mark_price": price, "index_price": None,
            "underlying_price": None, "mark_iv": None, "best_bid": None, "best_ask": None, "open_interest": None,
            "event_time_ms": t}


def produce_market(bootstrap: str, prefix: str, records: list[tuple[str, dict]]) -> None:
    codec, producer = default_codec(), Producer({"bootstrap.servers": bootstrap})
    topics = {record: topic for topic, record in MARKET_RECORDS.items()}
    for record, value in records:
        producer.produce(f"{prefix}{topics[record]}", key=value["instrument"].encode(),
                         value=codec.encode(record, value))
    assert producer.flush(30) == 0


def feed(bootstrap: str, prefix: str, venue: SimulatedVenue) -> MarketFeed:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"market-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    return MarketFeed(consumer, default_codec(), venue, {f"{prefix}{t}": r for t, r in MARKET_RECORDS.items()})


def test_the_executor_fills_at_the_market_topics_depth_and_mark(kafka_bootstrap: str, prefix: str,
                                                                 tmp_path: Path) -> None:
    # configured around 60,000; the market has since fallen: depth quoted around 30,000, then marked at 29,000
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEEP}), tmp_path / "l.sqlite")
    produce_market(kafka_bootstrap, prefix, [("OrderBookDepth", depth(31_000.0, T0 - 2)),
                                             ("OrderBookDepth", depth(30_000.0, T0 - 1)),
                                             ("MarkPrice", mark(29_500.0, T0 - 1)), ("MarkPrice", mark(29_000.0, T0))])
    sell = signed(KEY, ActionType.DELTA_HEDGE, "a", T0, instrument="BTC-PERPETUAL", side="sell", quantity=7.0)
    produce_actions(kafka_bootstrap, prefix, [sell])
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{prefix}executors",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{prefix}exec-test"})
    Executor(consumer, producer, default_codec(), venue, KEY, executor_config(prefix),
             market=feed(kafka_bootstrap, prefix, venue)).run(idle_exit_s=3)
    (report,) = read_topic(kafka_bootstrap, f"{prefix}backstop.executions", "ExecutionReport", until=1)
    # 5 at the first bid and 2 at the second of the latest depth, both placed at the latest mark
    expected = (5 * 29_000.0 * 0.999 + 2 * 29_000.0 * 0.998) / 7
    assert report["status"] == "filled" and report["avg_price"] == pytest.approx(expected, rel=1e-9)
    assert report["slippage_bps"] == pytest.approx((1 - expected / 29_000.0) * 1e4, rel=1e-6)


def test_poll_applies_what_arrived_after_the_start(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    venue = SimulatedVenue(SimulatedVenueConfig(books={}), tmp_path / "l.sqlite")
    market = feed(kafka_bootstrap, prefix, venue)
    try:
        market.start()  # empty topics: nothing to read
        assert market.applied == 0
        produce_market(kafka_bootstrap, prefix,
                       [("OrderBookDepth", depth(30_000.0, T0)), ("MarkPrice", mark(29_000.0, T0))])
        deadline = time.monotonic() + 30
        while market.applied < 2 and time.monotonic() < deadline:
            market.poll()
        assert market.applied == 2
        assert venue.book("BTC-PERPETUAL").bid_prices[0] == pytest.approx(29_000.0 * 0.999, rel=1e-12)
    finally:
        market.close()
