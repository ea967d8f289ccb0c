from __future__ import annotations

import random

import numpy as np

from pipelines.detect.sequencer import Sequencer
from pipelines.engine.engine import Engine, EngineOutput, EngineParams
from pipelines.engine.snapshot import (
    Checkpoint,
    MarketSnapshot,
    PartitionSnapshot,
    decode_checkpoint,
    encode_checkpoint,
)
from pipelines.policy.signing import SigningKey
from pipelines.risk.kernels import triage
from tests.kit.crash import PERP, PUT, crash_events

KEY = SigningKey("test", b"engine-test-signing-key-0123")


def run(events, params: EngineParams | None = None):
    engine = Engine(KEY, params or EngineParams(hedged_accounts=frozenset({"hedged-desk"})))
    breaches, actions = [], []
    for n, (record, value) in enumerate(events):
        out = engine.on_event(record, value, f"e{n}")
        breaches += out.breaches
        actions += out.actions
    out = engine.flush()
    return engine, breaches + out.breaches, actions + out.actions


def types_for(actions, account):
    return [a.action_type for a in actions if a.target == account]


def test_crash_escalates_in_order_and_leaves_the_safe_account_alone() -> None:
    _, breaches, actions = run(crash_events())
    kinds = {b.kind.value for b in breaches if not b.cleared}
    assert {"index_move", "iv_jump", "liquidity_drop", "margin_shortfall", "equity_below_liquidation"} <= kinds

    levered = types_for(actions, "levered-long")
    first = {t: levered.index(t) for t in dict.fromkeys(levered)}
    assert first["margin_call"] < first["reduce_only"] < first["partial_liquidation"]
    assert ("full_liquidation" in first or "transfer_to_lp" in first)
    assert types_for(actions, "whale-safe") == []
    assert "delta_hedge" in types_for(actions, "hedged-desk")
    halts = [a for a in actions if a.action_type == "halt"]
    assert halts and (halts[0].underlying, halts[0].account, halts[0].params["level"]) == ("BTC", None, "1")

    # every action carries its cause and a valid signature
    for action in actions:
        assert action.verify(KEY)
        if action.action_type in ("partial_liquidation", "full_liquidation", "halt"):
            assert action.breach_ids


def crash_then_recovery() -> list[tuple[str, dict]]:
    """BTC's index every 10 s for 95 minutes: 60,000, an 8 % gap at minute 1 (level 1: a 2-minute
    pause), then a partial recovery to 57,000 at minute 20; the crash leaves the one-hour window at
    minute 61, and the move left (57,000 against 55,200) is under the clear level."""
    start = crash_events()[0][1]["event_time_ms"]
    events = []
    for s in range(0, 95 * 60, 10):
        price = 60_000.0 if s < 60 else 55_200.0 if s < 20 * 60 else 57_000.0
        events.append(("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": price,
                                      "event_time_ms": start + s * 1000}))
    return events


def test_a_crash_then_recovery_halts_then_reduces_only_then_resumes() -> None:
    """The circuit's three states reach the venue as three market-wide actions, in order: halt at the
    gap, market_reduce_only once the pause is over while the move holds, resume once it clears."""
    events = crash_then_recovery()
    start = events[0][1]["event_time_ms"]
    _, _, actions = run(events)
    steps = [(a.action_type, a.underlying, a.params["state"], (a.event_time_ms - start) // 60_000)
             for a in actions]
    assert steps == [("halt", "BTC", "halted", 1), ("market_reduce_only", "BTC", "reducing", 3),
                     ("resume", "BTC", "active", 61)]
    assert all(a.breach_ids == actions[0].breach_ids and a.account is None for a in actions)


def test_liquidation_is_paced_and_capped() -> None:
    _, _, actions = run(crash_events())
    partials = [a for a in actions if a.account == "levered-long" and a.action_type == "partial_liquidation"]
    times = [a.event_time_ms for a in partials]
    assert all(b - a >= 1_000 for a, b in zip(times, times[1:]))  # at most one round a second
    assert all(a.quantity * float(a.params["mark"]) <= 100_000.0 + 1e-6 for a in partials)


def test_same_events_same_actions_byte_for_byte() -> None:
    _, b1, a1 = run(crash_events())
    _, b2, a2 = run(crash_events())
    assert [b.breach_id for b in b1] == [b.breach_id for b in b2]
    assert a1 == a2


def test_any_interleaving_through_the_sequencer_gives_the_same_actions() -> None:
    """Split the stream into per-topic inputs (as Kafka partitions), interleave them at random,
    sequence them, and compare with the direct run."""
    events = crash_events()
    inputs: dict[str, list] = {}
    for n, (record, value) in enumerate(events):
        inputs.setdefault(record, []).append((n, record, value))
    _, _, expected = run(events)
    for seed in range(3):
        rnd = random.Random(seed)
        seq = Sequencer()
        for name in inputs:
            seq.add_input(name)
        cursors = {name: 0 for name in inputs}
        ordered = []
        while cursors:
            name = rnd.choice(sorted(cursors))
            n, record, value = inputs[name][cursors[name]]
            seq.push(name, value["event_time_ms"], (n, record, value))
            cursors[name] += 1
            if cursors[name] == len(inputs[name]):
                del cursors[name]
                seq.close(name)
            ordered += seq.pop_ready()
        ordered += seq.pop_ready()
        assert len(ordered) == len(events)
        engine = Engine(KEY, EngineParams(hedged_accounts=frozenset({"hedged-desk"})))
        actions = []
        for n, record, value in ordered:
            actions += engine.on_event(record, value, f"e{n}").actions
        actions += engine.flush().actions
        assert actions == expected


def test_leaving_accounts_alone_changes_no_output(monkeypatch) -> None:
    """The engine sends only the accounts its triage cannot leave alone through the per-account
    path (not quiet, unmoved or only marking a round, hedged ones waiting between hedges);
    forcing every revalued account through it must give the same breaches, actions and states."""
    engine, breaches, actions = run(crash_events())
    screened = sum(1 for _ in breaches)
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.full_like(fates(self, *args), triage.VISIT))
    unscreened, all_breaches, all_actions = run(crash_events())
    assert [b.breach_id for b in all_breaches] == [b.breach_id for b in breaches] and screened
    assert all_actions == actions
    assert {a: engine.ladder.state(a) for a in engine.accounts.positions} == \
        {a: unscreened.ladder.state(a) for a in unscreened.accounts.positions}


def test_revaluation_is_the_ticks_view_and_changes_nothing() -> None:
    """``revaluation()`` gives what the last tick decided from (the exposure snapshots its flush
    emitted), and asking for it leaves the engine's later decisions unchanged."""
    events = crash_events()
    half = len(events) // 2
    engine = Engine(KEY, EngineParams(hedged_accounts=frozenset({"hedged-desk"}), exposure_interval_ms=0))
    for n, (record, value) in enumerate(events[:half]):
        engine.on_event(record, value, f"e{n}")
    flushed = engine.flush()
    revalued = engine.revaluation()
    ratio = dict(zip(revalued.book.accounts, revalued.risk.margin_ratio.tolist()))
    assert flushed.exposures
    for snapshot in flushed.exposures:
        assert ratio[snapshot["account"]] == snapshot["margin_ratio"]

    _, _, expected = run(events)
    asked = Engine(KEY, EngineParams(hedged_accounts=frozenset({"hedged-desk"})))
    actions = []
    for n, (record, value) in enumerate(events):
        actions += asked.on_event(record, value, f"e{n}").actions
        if n % 50 == 0:
            asked.revaluation()
    assert actions + asked.flush().actions == expected


def test_a_revaluation_asked_for_keeps_its_values_through_the_ticks_after_it() -> None:
    """``revaluation()``'s arrays are the caller's own: the ticks after it, which revalue the same
    built book into its resident outputs, leave them as they were."""
    events = [(record, value) for record, value in crash_events() if record != "OrderBookDepth"]
    engine = Engine(KEY)
    for n, (record, value) in enumerate(events[:40]):
        engine.on_event(record, value, f"e{n}")
    engine.flush()
    built = engine.accounts.built(engine.board.index.keys(), engine.board.instruments)
    risk = engine.revaluation().risk
    kept = {name: value.copy() for name, value in vars(risk).items() if isinstance(value, np.ndarray)}
    t = events[39][1]["event_time_ms"]
    for k in range(1, 4):
        engine.on_event("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": 50_000.0 - k,
                                       "event_time_ms": t + k * 1000}, f"later{k}")
    engine.flush()
    # the ticks revalued the same built book (into its resident outputs) at other prices
    assert engine.accounts.built(engine.board.index.keys(), engine.board.instruments) is built
    assert not np.array_equal(engine.revaluation().risk.equity, kept["equity"])
    assert all(np.array_equal(getattr(risk, name), value, equal_nan=True) for name, value in kept.items())


def test_a_revaluations_conditions_written_to_leave_the_ticks_after_it_alone() -> None:
    """``revaluation()``'s conditions are the caller's own too: a what-if that writes into them
    (here a depth) changes neither the board nor the conditions the next ticks revalue with."""
    events = [(record, value) for record, value in crash_events()]
    engine = Engine(KEY)
    for n, (record, value) in enumerate(events[:60]):
        engine.on_event(record, value, f"e{n}")
    engine.flush()
    board = dict(engine.board.depth_usd)
    asked = engine.revaluation().conditions
    depth, vols = dict(asked.depth_usd), dict(asked.realised_vol)
    assert depth and vols, "the crash's first events give a depth and a realised vol"
    for underlying in depth:
        asked.depth_usd[underlying] = 1.0
        asked.realised_vol[underlying] = 9.0
    assert engine.board.depth_usd == board
    after = engine.revaluation().conditions
    assert after.depth_usd == depth and after.realised_vol == vols


def test_an_older_market_record_does_not_overwrite_a_newer_one() -> None:
    """An input can deliver an event out of order (within the lateness allowance); the board
    keeps the newer value, and the index history stays in time order."""
    engine = Engine(KEY)
    tick = {"underlying": "BTC", "index_name": "btc", "event_time_ms": 10_000}
    engine.on_event("IndexPrice", {**tick, "price": 60_000.0}, "i:0")
    engine.on_event("IndexPrice", {**tick, "price": 58_000.0, "event_time_ms": 9_000}, "i:1")
    assert engine.board.index["BTC"] == 60_000.0
    engine.on_event("IndexPrice", {**tick, "price": 59_000.0, "event_time_ms": 10_500}, "i:2")
    assert engine.board.index["BTC"] == 59_000.0
    assert len(engine._index_history["BTC"]) == 2  # the older tick is not history


def test_an_overflowing_index_liquidates_the_bankrupt_account_instead_of_hiding_it() -> None:
    """A finite but absurd index (1e200) overflows the scenario margin to NaN; the short
    perpetual's equity is -1e200. The account must still be escalated (fail closed)."""
    account = {"account": "short", "sequence": 1, "event_time_ms": 0}
    events = [("CollateralUpdate", {**account, "asset": "USDC", "amount": 1_000.0, "change": 1_000.0,
                                    "reason": "deposit"}),
              ("PositionUpdate", {**account, "instrument": "BTC-PERPETUAL", "quantity": -1.0,
                                  "average_price": 60_000.0})]
    events += [("IndexPrice", {"underlying": "BTC", "index_name": "btc", "price": 1e200, "event_time_ms": t})
               for t in (10, 300, 600)]
    with np.errstate(all="ignore"):
        engine, breaches, actions = run(events)
        risk = engine.revaluation().risk
    assert np.isnan(risk.maintenance[0]) and risk.equity[0] == -1e200 and risk.margin_ratio[0] == np.inf
    assert "equity_below_liquidation" in [b.kind.value for b in breaches if b.subject == "short"]
    assert types_for(actions, "short") == ["full_liquidation"]


def test_an_engine_restored_mid_stream_goes_on_as_if_it_never_stopped() -> None:
    """An engine stored at a tick boundary mid-crash (its market and accounts in one Avro
    checkpoint) carries state, not caches (the exposure rows are rebuilt from the state): the
    engine restored from the stored bytes gives, for the rest of the stream, what an
    uninterrupted engine gives — the halted market and the liquidations under way included."""
    events = list(enumerate(crash_events()))
    params = EngineParams(hedged_accounts=frozenset({"hedged-desk"}))
    interval = params.revaluation_interval_ms

    def feed(engine: Engine, part: list) -> EngineOutput:
        out = EngineOutput()
        for n, (record, value) in part:
            out.extend(engine.on_event(record, value, f"e{n}"))
        return out

    whole = Engine(KEY, params)
    halted = next(i for i in range(len(events)) if "halt" in types_for(feed(whole, events[i:i + 1]).actions, "BTC"))
    tick = [value["event_time_ms"] // interval for _, (_, value) in events]
    cut = next(i for i in range(halted + 1, len(events)) if tick[i] > tick[i - 1])  # the first event of a tick
    boundary = tick[cut] * interval
    feed(whole, events[halted + 1:cut])
    expected = feed(whole, events[cut:])
    expected.extend(whole.flush())
    assert "partial_liquidation" in [a.action_type for a in expected.actions]

    first = Engine(KEY, params)
    assert feed(first, events[:cut]).exposures  # the exposure rows were cached before the cut
    got = first.close_tick(boundary)
    market = MarketSnapshot(boundary, first.market_state(), {})
    partition = PartitionSnapshot(0, 1, boundary, first.export_accounts(first.held_accounts()), {})
    stored = decode_checkpoint(encode_checkpoint(Checkpoint(partition, market)))
    restored = Engine.restore(KEY, params, stored.market.market, stored.partition.accounts)
    got.extend(feed(restored, events[cut:]))
    got.extend(restored.flush())
    assert [b.breach_id for b in got.breaches] == [b.breach_id for b in expected.breaches]
    assert (got.actions, got.exposures) == (expected.actions, expected.exposures)


def test_accounts_without_an_index_price_are_reported_until_one_comes() -> None:
    """An account on an underlying with no index yet cannot be revalued: nothing can act for
    it, so the engine names the underlying and how many accounts wait (the worker warns)."""
    engine = Engine(KEY)
    position = {"account": "a", "instrument": "ETH-PERPETUAL", "quantity": 2.0, "average_price": 3_000.0,
                "sequence": 1, "event_time_ms": 1_000}
    engine.on_event("PositionUpdate", position, "p0")
    engine.on_event("PositionUpdate", {**position, "account": "b", "instrument": "BTC-PERPETUAL"}, "p1")
    engine.on_event("PositionUpdate", {**position, "account": "c"}, "p2")
    assert engine.unpriced() == {"BTC": 1, "ETH": 2}
    engine.on_event("IndexPrice", {"underlying": "ETH", "index_name": "eth", "price": 3_000.0, "event_time_ms": 1_100},
                    "i0")
    assert engine.unpriced() == {"BTC": 1}
    out = engine.flush()
    assert {e["account"] for e in out.exposures} == {"a", "c"}  # the priced ones are revalued meanwhile
    engine.on_event("IndexPrice", {"underlying": "BTC", "index_name": "btc", "price": 60_000.0, "event_time_ms": 1_200},
                    "i1")
    assert engine.unpriced() == {}


def test_a_mark_far_from_its_index_is_a_manipulation_breach_for_linear_contracts_only() -> None:
    """An option's mark is a premium, far below the index by nature: only a perpetual or future
    whose mark leaves its index is the Mango/JELLY pattern."""
    engine = Engine(KEY, EngineParams())
    t = 1_795_000_000_000
    engine.on_event("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": 60_000.0,
                                   "event_time_ms": t}, "backstop.market.index:0:0")

    def mark(instrument: str, price: float, offset: int) -> list:
        value = {"instrument": instrument, "underlying": "BTC", "mark_price": price, "index_price": 60_000.0,
                 "underlying_price": None, "mark_iv": None, "best_bid": None, "best_ask": None,
                 "open_interest": 100.0, "event_time_ms": t + offset}
        return [b.kind.value for b in engine.on_event("MarkPrice", value, f"backstop.market.mark:0:{offset}").breaches]

    assert mark("BTC-27DEC26-55000-P", 2_000.0, 1) == []
    assert mark("BTC-PERPETUAL", 80_000.0, 2) == ["mark_manipulation"]


def test_a_halt_holds_back_hedges_that_add_risk_and_resume_sends_them() -> None:
    """A hedge the venue would refuse in the circuit's state is not sent (nor left in flight, which
    would block it after the resume); a hedge that only shrinks the perpetual position still is."""
    events = crash_then_recovery()
    start = events[0][1]["event_time_ms"]
    during_halt = start + 90_000  # the gap is at minute 1, the halt lasts until minute 3
    events.insert(1, ("VolatilityUpdate", {"underlying": "BTC", "instrument": None, "iv": 0.55, "smile": [],
                                           "source": "test", "event_time_ms": start}))
    for account, instrument, qty in (("puts-desk", PUT, 40.0), ("perp-desk", PERP, 10.0)):
        events.append(("CollateralUpdate", {"account": account, "asset": "USDC", "amount": 5_000_000.0,
                                            "change": 5_000_000.0, "reason": "deposit", "sequence": 1,
                                            "event_time_ms": during_halt}))
        events.append(("PositionUpdate", {"account": account, "instrument": instrument, "quantity": qty,
                                          "average_price": 1_000.0, "sequence": 1, "event_time_ms": during_halt}))
    events.sort(key=lambda e: e[1]["event_time_ms"])
    _, _, actions = run(events, EngineParams(hedged_accounts=frozenset({"puts-desk", "perp-desk"})))
    resumed = next(a.event_time_ms for a in actions if a.action_type == "resume")
    hedges = {account: [a for a in actions if a.action_type == "delta_hedge" and a.account == account]
              for account in ("puts-desk", "perp-desk")}
    # long puts hedge by buying the perpetual they do not hold: refused until the resume, then sent
    assert hedges["puts-desk"] and all(a.event_time_ms >= resumed for a in hedges["puts-desk"])
    assert hedges["puts-desk"][0].side == "buy"
    # a long perpetual hedges by selling it down: reduce-only, so sent while halted
    first = hedges["perp-desk"][0]
    assert during_halt <= first.event_time_ms < start + 3 * 60_000 and (first.side, first.quantity) == ("sell", 10.0)


def test_the_last_exposure_of_each_account_survives_a_partition_handover() -> None:
    """The time and ratio of an account's last exposure snapshot (what throttles the next) is
    account state: dropping other accounts keeps it, and an export after that carries it."""
    engine = Engine(KEY)
    position = {"account": "a", "instrument": "BTC-PERPETUAL", "quantity": 2.0, "average_price": 60_000.0,
                "sequence": 1, "event_time_ms": 1_000}
    engine.on_event("PositionUpdate", position, "p0")
    engine.on_event("PositionUpdate", {**position, "account": "b", "quantity": -1.0}, "p1")
    engine.on_event("IndexPrice", {"underlying": "BTC", "index_name": "btc", "price": 60_000.0,
                                   "event_time_ms": 1_100}, "i0")
    sent = {e["account"]: (e["event_time_ms"], e["margin_ratio"]) for e in engine.close_tick(1_250).exposures}
    assert set(sent) == {"a", "b"}
    engine.drop_accounts(["a"])
    [state] = engine.export_accounts(["a", "b"])
    assert state["account"] == "b"
    assert (state["emitted"]["time_ms"], state["emitted"]["ratio"]) == sent["b"]
    assert isinstance(state["emitted"]["time_ms"], int)
