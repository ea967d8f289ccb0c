"""Anti-gaming consequences through the engine: withdraw-then-liquidate freezes the account's
withdrawals and raises its margin add-on (carried in snapshots); a thin-book pump delists the
instrument at its price before the pump, and no shard liquidates into it meanwhile."""

from __future__ import annotations

import math

import pytest

from pipelines.detect.detectors import DetectorParams
from pipelines.engine.engine import Engine, EngineParams
from pipelines.engine.snapshot import (
    Checkpoint,
    MarketSnapshot,
    PartitionSnapshot,
    decode_checkpoint,
    encode_checkpoint,
)
from pipelines.policy.gaming import GamingParams
from pipelines.policy.signing import SigningKey
from pipelines.scenarios.generate import depth_record

LIQUIDATIONS = ("partial_liquidation", "full_liquidation", "transfer_to_lp", "insurance_fund")
KEY = SigningKey("test", b"engine-test-signing-key-0123")
T0 = 1_795_000_000_000
PERP = "BTC-PERPETUAL"
JELLY = "JELLY-PERPETUAL"


def index(underlying: str, price: float, t: int) -> tuple[str, dict]:
    return "IndexPrice", {"underlying": underlying, "index_name": underlying.lower(), "price": price,
                          "event_time_ms": t}


def collateral(account: str, amount: float, change: float, t: int, seq: int) -> tuple[str, dict]:
    return "CollateralUpdate", {"account": account, "asset": "USDC", "amount": amount, "change": change,
                                "reason": "deposit" if change >= 0 else "withdrawal", "sequence": seq,
                                "event_time_ms": t}


def position(account: str, instrument: str, qty: float, avg: float, t: int) -> tuple[str, dict]:
    return "PositionUpdate", {"account": account, "instrument": instrument, "quantity": qty, "average_price": avg,
                              "sequence": 1, "event_time_ms": t}


def feed(engine: Engine, events: list[tuple[str, dict]]):
    breaches, actions, exposures = [], [], []
    for n, (record, value) in enumerate(events):
        out = engine.on_event(record, value, f"e:0:{n}")
        breaches += out.breaches
        actions += out.actions
        exposures += out.exposures
    return breaches, actions, exposures


# ---------------------------------------------------------------------------- withdraw-then-liquidate

def withdrawal_events(maintenance: float) -> list[tuple[str, dict]]:
    """A 10 BTC long funded at twice its maintenance margin withdraws 60 % of its collateral:
    margin ratio 0.5 -> 1.25, a margin breach right after a withdrawal."""
    funded = 2 * maintenance
    left = 0.8 * maintenance
    return [index("BTC", 60_000.0, T0), collateral("whale", funded, funded, T0 + 1, 1),
            position("whale", PERP, 10.0, 60_000.0, T0 + 1), index("BTC", 60_000.0, T0 + 1_000),
            collateral("whale", left, left - funded, T0 + 2_000, 2), index("BTC", 60_000.0, T0 + 3_000),
            index("BTC", 60_000.0, T0 + 4_000), index("BTC", 60_000.0, T0 + 10_000)]


def perp_maintenance() -> float:
    engine = Engine(KEY)
    _, _, exposures = feed(engine, [index("BTC", 60_000.0, T0), collateral("whale", 1e9, 1e9, T0 + 1, 1),
                                    position("whale", PERP, 10.0, 60_000.0, T0 + 1)])
    exposures += engine.flush().exposures
    return exposures[-1]["maintenance_margin_usd"]


PARAMS = EngineParams(detectors=DetectorParams(margin_grace_ms=0))


def test_withdraw_then_liquidate_freezes_withdrawals_and_doubles_the_margin() -> None:
    maintenance = perp_maintenance()
    engine = Engine(KEY, PARAMS)
    breaches, actions, exposures = feed(engine, withdrawal_events(maintenance))
    assert "withdraw_then_breach" in {b.kind.value for b in breaches}
    freezes = [a for a in actions if a.action_type == "freeze_withdrawals"]
    assert len(freezes) == 1 and freezes[0].account == "whale" and freezes[0].params["add_on"] == "1.0"
    assert freezes[0].breach_ids and freezes[0].verify(KEY)
    after = [e for e in exposures if e["event_time_ms"] > freezes[0].event_time_ms]
    assert after and math.isclose(after[-1]["maintenance_margin_usd"], 2 * maintenance, rel_tol=1e-9)
    assert math.isclose(after[-1]["margin_ratio"], 2 * maintenance / (0.8 * maintenance), rel_tol=1e-9)


def test_without_the_add_on_the_margin_stays_and_the_freeze_is_sent_once() -> None:
    maintenance = perp_maintenance()
    engine = Engine(KEY, EngineParams(detectors=PARAMS.detectors, gaming=GamingParams(add_on=0.0)))
    _, actions, exposures = feed(engine, withdrawal_events(maintenance))
    assert [a.action_type for a in actions].count("freeze_withdrawals") == 1
    assert math.isclose(exposures[-1]["maintenance_margin_usd"], maintenance, rel_tol=1e-9)


def test_the_penalty_travels_with_the_account_in_a_checkpoint() -> None:
    maintenance = perp_maintenance()
    events = withdrawal_events(maintenance)
    engine = Engine(KEY, PARAMS)
    feed(engine, events[:-1])
    engine.close_tick(T0 + 5_000)
    accounts, market = engine.export_accounts(["whale"]), engine.market_state()
    assert accounts[0]["penalty"]["add_on"] == 1.0
    stored = decode_checkpoint(encode_checkpoint(Checkpoint(PartitionSnapshot(0, 1, T0 + 5_000, accounts, {}),
                                                            MarketSnapshot(T0 + 5_000, market, {}))))
    restored = Engine.restore(KEY, PARAMS, stored.market.market, stored.partition.accounts)
    last = events[-1:]

    def exposures(engine: Engine) -> list[dict]:
        return feed(engine, last)[2] + engine.flush().exposures

    got = exposures(restored)
    assert got == exposures(engine) and math.isclose(got[-1]["maintenance_margin_usd"], 2 * maintenance)
    without = [dict(a, penalty=None) for a in stored.partition.accounts]
    forgot = exposures(Engine.restore(KEY, PARAMS, stored.market.market, without))
    assert math.isclose(forgot[-1]["maintenance_margin_usd"], maintenance)


# ---------------------------------------------------------------------------- thin-book pump

def mark(price: float, t: int, interest: float | None, index_price: float | None = None,
         instrument: str = JELLY, share: float | None = None) -> tuple[str, dict]:
    return "MarkPrice", {"instrument": instrument, "underlying": instrument.split("-")[0], "mark_price": price,
                         "index_price": price if index_price is None else index_price, "underlying_price": price,
                         "mark_iv": None, "best_bid": None, "best_ask": None, "open_interest": interest,
                         "event_time_ms": t, "largest_holder_share": share}


def pump_events(share: float | None = 0.8, short: float = -80e6) -> list[tuple[str, dict]]:
    """A $4M JELLY short (``short``: 80M contracts of 100M open interest; the venue publishes
    ``share`` as its largest holder's) on $3M of collateral; a $200k book; the index rises 10 %
    every 5 s and the mark runs 8 % ahead of it (no 25 % mark-vs-index breach can see it): +31 %
    from the window's low (a pump) after 10 s, and the short liquidatable some 15 s later."""
    interest = 100e6
    events = [index("JELLY", 0.05, T0), ("OrderBookDepth", depth_record(JELLY, T0, 0.05, 200_000.0, 1)),
              collateral("shorty", 3e6, 3e6, T0 + 1, 1), position("shorty", JELLY, short, 0.05, T0 + 1),
              mark(0.05, T0 + 2, interest, share=share)]
    price = 0.05
    for k in range(1, 25):
        price *= 1.10
        t = T0 + k * 5_000
        events += [index("JELLY", price, t), mark(price * 1.08, t + 1, interest, price, share=share)]
    return events


def test_a_thin_book_pump_delists_the_instrument_at_its_price_before_the_pump() -> None:
    breaches, actions, _ = feed(Engine(KEY), pump_events())
    manipulation = [b for b in breaches if b.kind.value == "mark_manipulation"]
    assert len(manipulation) == 1 and manipulation[0].level == 1
    delists = [a for a in actions if a.action_type == "delist_settle"]
    assert len(delists) == 1
    assert (delists[0].underlying, delists[0].instrument) == ("JELLY", JELLY)
    assert float(delists[0].params["settle_price"]) == 0.05
    assert delists[0].breach_ids == (manipulation[0].breach_id,)
    # from the breach on, nothing of JELLY is liquidated at the pumped price
    after = [a for a in actions if a.event_time_ms >= manipulation[0].event_time_ms
             and a.action_type in ("partial_liquidation", "full_liquidation", "transfer_to_lp", "insurance_fund")]
    assert after == []


def test_without_the_pump_rule_the_short_is_liquidated_into_the_pump() -> None:
    params = EngineParams(detectors=DetectorParams(pump_min_move=math.inf))
    breaches, actions, _ = feed(Engine(KEY, params), pump_events())
    assert "mark_manipulation" not in {b.kind.value for b in breaches}
    assert "delist_settle" not in {a.action_type for a in actions}
    late = [a for a in actions if a.event_time_ms >= T0 + 15_000
            and a.action_type in ("partial_liquidation", "full_liquidation", "transfer_to_lp", "insurance_fund")]
    assert late


@pytest.mark.parametrize("share", [0.08, 0.49, None])
def test_a_pump_on_open_interest_published_spread_out_or_not_at_all_is_not_one(share: float | None) -> None:
    """The same pump, but the venue publishes its largest holder under half the open interest,
    or publishes no share: no pump, though the engine holds an account with 80 % of it."""
    breaches, actions, _ = feed(Engine(KEY), pump_events(share))
    assert "mark_manipulation" not in {b.kind.value for b in breaches}
    assert "delist_settle" not in {a.action_type for a in actions}


def test_an_engine_holding_none_of_the_pump_s_accounts_judges_it_alike() -> None:
    """Concentration is market data: an engine whose largest JELLY position is 1 % of the open
    interest (a shard without the actor's account) sends the same breach and delisting as one
    holding the 80 % short."""
    with_short, actions_with, _ = feed(Engine(KEY), pump_events())
    without, actions_without, _ = feed(Engine(KEY), pump_events(short=-1e6))
    pumps = [b for b in without if b.kind.value == "mark_manipulation"]
    assert len(pumps) == 1 and pumps == [b for b in with_short if b.kind.value == "mark_manipulation"]
    delists = [a for a in actions_without if a.action_type == "delist_settle"]
    assert len(delists) == 1 and delists == [a for a in actions_with if a.action_type == "delist_settle"]


def test_a_delisted_pump_blocks_its_instrument_only() -> None:
    """Once the pump is delisted it no longer fires, and the BTC long of the account the pump
    puts under water is still liquidated: the block is JELLY's, not its underlying's or the
    account's."""
    engine = Engine(KEY)
    events = pump_events()
    events.insert(4, position("shorty", PERP, 10.0, 60_000.0, T0 + 1))
    events.insert(0, index("BTC", 60_000.0, T0))
    breaches, actions, _ = feed(engine, events)
    assert engine.detectors.manipulated() == {} and engine.detectors.delisted() == {JELLY}
    fired = next(b.event_time_ms for b in breaches if b.kind.value == "mark_manipulation")
    closed = {a.instrument for a in actions if a.action_type in LIQUIDATIONS and a.event_time_ms >= fired}
    assert closed == {PERP}


def test_a_mark_off_its_index_clears_on_the_index_and_liquidations_resume() -> None:
    """A BTC short's mark jumps 30 % over a lagging index (level 0): delisted at the index, and
    nothing liquidated while it fires; the index then catches up and stays: the breach clears
    and the short, under water, is liquidated."""
    events = [index("BTC", 100.0, T0), collateral("short", 2_000.0, 2_000.0, T0 + 1, 1),
              position("short", PERP, -100.0, 100.0, T0 + 1), mark(100.0, T0 + 2, None, 100.0, PERP),
              mark(130.0, T0 + 1_000, None, 100.0, PERP)]
    events += [item for k in range(2, 30) for item in (index("BTC", 130.0, T0 + k * 1_000),
                                                       mark(130.0, T0 + k * 1_000 + 1, None, 130.0, PERP))]
    breaches, actions, _ = feed(Engine(KEY), events)
    manipulation = [b for b in breaches if b.kind.value == "mark_manipulation"]
    assert [(b.level, b.cleared) for b in manipulation] == [(0, False), (0, True)]
    fired, cleared = manipulation[0].event_time_ms, manipulation[1].event_time_ms
    assert [a.params["settle_price"] for a in actions if a.action_type == "delist_settle"] == ["100.0"]
    closes = [a.event_time_ms for a in actions if a.action_type in LIQUIDATIONS]
    assert closes and all(t >= cleared for t in closes) and cleared > fired


def test_a_shard_that_does_not_report_jelly_keeps_its_accounts_out_of_the_pump_too() -> None:
    """Only the reporting shard emits the breach and the delisting; every shard's ladder waits."""
    reporting, actions_r, _ = feed(Engine(KEY), pump_events())
    other = Engine(KEY, reports=lambda subject: False)
    breaches, actions, _ = feed(other, pump_events())
    assert "mark_manipulation" not in {b.kind.value for b in breaches}
    assert "delist_settle" not in {a.action_type for a in actions}
    assert other.detectors.delisted() == {JELLY}
    account_actions = [a for a in actions_r if a.account == "shorty"]
    assert [a for a in actions if a.account == "shorty"] == account_actions


def test_the_pump_state_travels_in_the_market_checkpoint() -> None:
    events = pump_events()
    engine = Engine(KEY)
    feed(engine, events[:12])
    boundary = (events[11][1]["event_time_ms"] // 250 + 1) * 250
    engine.close_tick(boundary)
    market = engine.market_state()
    stored = decode_checkpoint(encode_checkpoint(Checkpoint(
        PartitionSnapshot(0, 1, boundary, engine.export_accounts(["shorty"]), {}),
        MarketSnapshot(boundary, market, {}))))
    restored = Engine.restore(KEY, None, stored.market.market, stored.partition.accounts)
    assert feed(restored, events[12:]) == feed(engine, events[12:])
    assert restored.detectors.delisted() == {JELLY}
