"""The core's state as data: for each class, an object restored from the Avro round trip of
another's ``state()`` behaves like it on any further events, and ends in the same state.

Every test runs random events into an object A, restores B from ``state()`` written and read
back with ``fastavro.schemaless_writer`` / ``schemaless_reader`` and the schema of
``pipelines/engine/state_schema.py``, feeds both the same further events, and compares what
they return and their states after.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import avro.schema
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.detect.breach import Breach, BreachKind
from pipelines.detect.detectors import DetectorParams, Detectors
from pipelines.detect.windows import HeldCondition, RollingExtremes, RollingTwap, Sample, Watermark
from pipelines.engine.index_history import IndexHistory
from pipelines.engine.market_board import MarketBoard
from pipelines.engine.state_schema import SCHEMAS, parse
from pipelines.events.schemas import default_schemas
from pipelines.policy.circuit import CircuitBreakers, CircuitParams
from pipelines.policy.ladder import AccountView, CloseIntent, Ladder, LadderParams
from pipelines.risk.market import MarketError, MarketState, UnderlyingMarket


def round_trip(name: str, state: dict) -> dict:
    """``state`` written with the schema ``name`` and read back."""
    schema = parse(name)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, state)
    out.seek(0)
    return fastavro.schemaless_reader(out, schema, None)


def plain(value: Any) -> bool:
    """Whether ``value`` is plain data: str, int, float, bool, None, lists and str-keyed dicts."""
    if isinstance(value, list):
        return all(plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and plain(item) for key, item in value.items())
    return value is None or type(value) in (str, int, float, bool)


def test_the_state_schemas_are_avro_by_the_official_parser() -> None:
    """In order, each after the named types it refers to: a union of them all parses."""
    union = avro.schema.parse(json.dumps([default_schemas()["InstrumentDefinition"].json, *SCHEMAS.values()]))
    assert [schema.fullname for schema in union.schemas[1:]] == [f"backstop.state.{name}" for name in SCHEMAS]
    assert {"WatermarkState", "HeldConditionState", "RollingExtremesState", "RollingTwapState",
            "DetectorAccountState", "DetectorMarketState", "LadderAccountState", "CircuitBreakersState",
            "MarketBoardState", "IndexHistoryState"} <= SCHEMAS.keys()


# ---------------------------------------------------------------------------- windows

times = st.lists(st.tuples(st.integers(-300, 400), st.integers(-3, 3)), max_size=60)


@given(st.integers(0, 500), times, times)
def test_a_restored_watermark_admits_as_the_original(lateness: int, before: list, after: list) -> None:
    a = Watermark(lateness)
    t = 0
    for step, _ in before:
        t += step
        a.admit(t)
    b = Watermark.from_state(round_trip("WatermarkState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    for step, _ in after:
        t += step
        assert b.admit(t) == a.admit(t)
    assert b.state() == a.state()


conditions = st.lists(st.tuples(st.integers(0, 2_000), st.booleans(), st.booleans()), max_size=40)


@given(st.integers(0, 3_000), conditions, conditions)
def test_a_restored_held_condition_fires_and_clears_as_the_original(hold_ms: int, before: list, after: list) -> None:
    a = HeldCondition(hold_ms)
    t = 0
    for step, triggered, cleared in before:
        t += step
        a.update(t, triggered, cleared)
    b = HeldCondition.from_state(round_trip("HeldConditionState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    for step, triggered, cleared in after:
        t += step
        assert b.update(t, triggered, cleared) == a.update(t, triggered, cleared)
    assert b.state() == a.state()


def samples_from(steps: list[tuple[int, int]], start: int = 0) -> list[Sample]:
    """Samples from (step, value) pairs: a negative step is an event that late (it may be refused)."""
    newest, out = start, []
    for n, (step, value) in enumerate(steps):
        t = max(0, newest + step)
        newest = max(newest, t)
        out.append(Sample(t, 100.0 + value, f"s{start}:{n}"))
    return out


def extremes_outputs(window: RollingExtremes, samples: list[Sample]) -> list:
    out = []
    for sample in samples:
        added = window.add(sample)
        t = sample.event_time_ms
        out.append((added, window.extremes(t), window.start_ms(t)) if added else (added,))
    return out


def twap_outputs(window: RollingTwap, samples: list[Sample]) -> list:
    out = []
    for sample in samples:
        added = window.add(sample)
        out.append((added, window.average(sample.event_time_ms), window.start_ms(sample.event_time_ms))
                   if added else (added,))
    return out


window_params = st.tuples(st.sampled_from([1, 10, 1_000, 5_000]), st.integers(0, 500), st.sampled_from([1, 7, 360]))


@settings(max_examples=150)
@given(window_params, times, times)
def test_a_restored_window_of_extremes_answers_as_the_original(params: tuple, before: list, after: list) -> None:
    a = RollingExtremes(*params)
    samples = samples_from(before + after)
    extremes_outputs(a, samples[:len(before)])
    b = RollingExtremes.from_state(round_trip("RollingExtremesState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    assert extremes_outputs(b, samples[len(before):]) == extremes_outputs(a, samples[len(before):])
    assert b.state() == a.state()


@settings(max_examples=150)
@given(window_params, times, times)
def test_a_restored_twap_window_answers_as_the_original(params: tuple, before: list, after: list) -> None:
    """Exactly: the running sums recomputed on restore are the floats the original holds."""
    a = RollingTwap(*params)
    samples = samples_from(before + after)
    twap_outputs(a, samples[:len(before)])
    b = RollingTwap.from_state(round_trip("RollingTwapState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    assert twap_outputs(b, samples[len(before):]) == twap_outputs(a, samples[len(before):])
    assert b.state() == a.state()
    assert b._sums == a._sums  # derived on restore, so not in the state: compared here


def test_nan_and_infinities_survive_the_round_trip() -> None:
    window = RollingTwap(10_000, 100, 1)
    for n, value in enumerate([math.inf, -math.inf, math.nan, 1.0]):
        window.add(Sample(n * 400, value, f"s{n}"))
    state = window.state()
    assert [sample["value"] for sample in state["recent"]][:2] == [math.inf, -math.inf]
    assert math.isnan(state["recent"][2]["value"])
    assert repr(round_trip("RollingTwapState", state)) == repr(state)  # repr: nan != nan


# ---------------------------------------------------------------------------- detectors

ACCOUNTS = ["a", "b", "c", "d"]
UNDERLYINGS = ["BTC", "ETH"]
INSTRUMENTS = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26-60000-C"]
FAST = DetectorParams(allowed_lateness_ms=2_000, margin_grace_ms=1_000, index_move_window_ms=20_000,
                      iv_jump_window_ms=10_000, depth_hold_ms=2_000, oracle_stale_ms=5_000,
                      oracle_twap_window_ms=10_000, withdrawal_lookback_ms=10_000, pump_window_ms=10_000,
                      window_buckets=7)

steps = st.integers(-2_500, 1_500)  # a negative step: an event that late, beyond the allowance at times
DETECTOR_EVENTS = st.lists(st.one_of(
    st.tuples(st.just("collateral"), st.sampled_from(ACCOUNTS), steps, st.sampled_from([-50.0, -5.0, 10.0]),
              st.sampled_from([20.0, 100.0])),
    st.tuples(st.just("margin"), st.sampled_from(ACCOUNTS), steps,
              st.sampled_from([0.5, 0.96, 1.2, 1.6, math.inf])),
    st.tuples(st.just("index"), st.sampled_from(UNDERLYINGS), steps, st.integers(-5, 5)),
    st.tuples(st.just("iv"), st.sampled_from(UNDERLYINGS + INSTRUMENTS[2:]), steps, st.sampled_from([0.5, 0.58, 0.7])),
    st.tuples(st.just("depth"), st.sampled_from(INSTRUMENTS), steps, st.sampled_from([1e5, 3e5, 4e5])),
    st.tuples(st.just("oracle"), st.sampled_from(UNDERLYINGS), steps, st.sampled_from(["pyth", "chainlink"]),
              st.sampled_from([0, 7_000]), st.integers(-5, 5)),
    st.tuples(st.just("mark"), st.sampled_from(INSTRUMENTS), steps, st.sampled_from([1.0, 1.1, 1.4, 2.0]),
              st.sampled_from([0.0, 1e6, math.inf]), st.sampled_from([None, 1e5, 1e7]), st.booleans()),
), max_size=50)


def timed(events: list[tuple], start: int = 100_000) -> list[tuple]:
    """Events with their step turned into an event time on a clock that advances with the positive steps."""
    clock, out = start, []
    for kind, key, step, *rest in events:
        t = clock + step
        clock = max(clock, t)
        out.append((kind, key, t, *rest))
    return out


def detect(d: Detectors, event: tuple) -> tuple:
    """What one event gives: its breaches, whether it was late, and the queries on its key."""
    late = d.late_events
    match event:
        case ("collateral", account, t, change, equity):
            breaches = d.on_collateral(account, t, change, equity, f"c{t}")
        case ("margin", account, t, ratio):
            breaches = d.on_margin(account, t, ratio, f"m{t}")
        case ("index", underlying, t, move):
            breaches = d.on_index(underlying, t, 100.0 * (1 + move * 0.04), f"i{t}")
        case ("iv", key, t, iv):
            breaches = d.on_iv(key, t, iv, f"v{t}")
        case ("depth", instrument, t, depth):
            breaches = d.on_depth(instrument, t, depth, f"d{t}")
        case ("oracle", underlying, t, source, lag, move):
            breaches = d.on_oracle(underlying, source, t, t - lag, 100.0 * (1 + move * 0.03), f"o{t}")
        case ("mark", instrument, t, mark, backing, depth, follows):  # follows: the index moved with the mark
            breaches = d.on_mark(instrument, t, mark, mark if follows else 1.0, backing, depth, f"k{t}")
    queries = (d.margin_idle(event[1]) if event[0] in ("collateral", "margin") else
               [(d.oracle_unreliable(u), d.circuit_level(u)) for u in UNDERLYINGS] + [d.manipulated()])
    return [b.breach_id for b in breaches], d.late_events - late, queries


def restored_detectors(market: dict, accounts: dict[str, dict]) -> Detectors:
    d = Detectors(FAST)
    d.restore_market(round_trip("DetectorMarketState", market))
    for account, state in accounts.items():
        d.restore_account(account, round_trip("DetectorAccountState", state))
    return d


@settings(max_examples=150, deadline=None)
@given(DETECTOR_EVENTS, DETECTOR_EVENTS, st.sets(st.sampled_from(ACCOUNTS)))
def test_detectors_restored_whole_or_split_by_account_detect_as_the_original(before: list, after: list,
                                                                             mine: set[str]) -> None:
    """One detectors restored from the market part and every account, and two that share the
    market part and split the accounts: each gives what the original gives on its accounts'
    events, and all of them on the market's."""
    events = timed(before + after)
    a = Detectors(FAST)
    for event in events[:len(before)]:
        detect(a, event)
    market = a.market_state()
    accounts = {account: a.account_state(account) for account in a.accounts()}
    assert plain(market) and plain(accounts) and set(accounts) <= set(ACCOUNTS) and None not in accounts.values()
    assert {account for account in ACCOUNTS if a.account_state(account) is not None} == a.accounts()
    whole = restored_detectors(market, accounts)
    split = {True: restored_detectors(market, {k: v for k, v in accounts.items() if k in mine}),
             False: restored_detectors(market, {k: v for k, v in accounts.items() if k not in mine})}
    for event in events[len(before):]:
        expected = detect(a, event)
        assert detect(whole, event) == expected
        if event[0] in ("collateral", "margin"):
            assert detect(split[event[1] in mine], event) == expected
        else:
            assert detect(split[True], event) == expected and detect(split[False], event) == expected
    assert whole.market_state() == a.market_state()
    for part, d in split.items():
        assert {k: v for k, v in d.market_state().items() if k != "late_events"} == \
            {k: v for k, v in a.market_state().items() if k != "late_events"}
        assert d.accounts() == {account for account in a.accounts() if (account in mine) == part}
    for account in ACCOUNTS:
        assert whole.account_state(account) == split[account in mine].account_state(account) == \
            a.account_state(account)


def test_a_dropped_account_leaves_nothing_behind() -> None:
    d = Detectors(FAST)
    d.on_collateral("a", 1_000, -50.0, 100.0, "c")
    d.on_margin("a", 2_000, 1.2, "m")
    d.on_margin("b", 2_000, 1.2, "m")
    d.drop_account("a")
    assert d.account_state("a") is None and d.accounts() == {"b"}
    assert d.on_margin("a", 0, 1.2, "m") == [] and d.late_events == 0  # no watermark left: not late


# ---------------------------------------------------------------------------- ladder

LADDER_EVENTS = st.lists(st.one_of(
    st.tuples(st.just("revalue"), st.sampled_from(ACCOUNTS), st.integers(0, 1_500),
              st.sampled_from([0.5, 0.75, 0.85, 0.95, 1.1, 1.6]), st.sampled_from([-2.0, 0.0, 3.0]),
              st.sampled_from([-5.0, 0.0]), st.booleans(),
              st.sampled_from([(), (BreachKind.MARGIN_SHORTFALL,), (BreachKind.EQUITY_BELOW_LIQUIDATION,)]),
              st.booleans(), st.sets(st.sampled_from(INSTRUMENTS)), st.sets(st.sampled_from(UNDERLYINGS))),
    st.tuples(st.just("position"), st.sampled_from(ACCOUNTS), st.integers(0, 0), st.sampled_from(INSTRUMENTS)),
), max_size=50)


def legs(size: float) -> list[CloseIntent]:
    """An account's legs, each as the intent to close it."""
    return [CloseIntent("BTC-PERPETUAL", "BTC", -size, 60_000.0),
            CloseIntent("ETH-PERPETUAL", "ETH", size / 2, 3_000.0)]


def escalate(ladder: Ladder, event: tuple, t: int) -> tuple:
    """What one event gives: the decisions, then the account's state and whether it may round."""
    match event:
        case ("revalue", account, _, ratio, size, velocity, hedged, kinds, flat, thin, unreliable):
            equity = 200_000.0
            view = AccountView(account, t, equity, ratio * equity, ratio * equity * 1.25, ratio,
                               {"BTC": size, "ETH": -size}, {"BTC": 0.001}, {}, {"BTC": 60_000.0, "ETH": 3_000.0},
                               {"BTC": velocity}, hedged)
            breaches = [Breach(kind, account, t, ratio, 1.0, t, t, (f"r{t}",)) for kind in kinds]
            positions = [] if flat else legs(size)
            decisions = ladder.on_revaluation(view, breaches, positions, lambda target: legs(size * target), thin,
                                              unreliable)
        case ("position", account, _, instrument):
            ladder.on_position_update(account, instrument)
            decisions = []
    return decisions, ladder.state(account), ladder.may_round(account, 1.0, t, 1.0)


def restored_ladder(accounts: dict[str, dict]) -> Ladder:
    ladder = Ladder(LadderParams(round_ms=1_000, ramp_ms=5_000))
    for account, state in accounts.items():
        ladder.restore_account(account, round_trip("LadderAccountState", state))
    return ladder


@settings(max_examples=150, deadline=None)
@given(LADDER_EVENTS, LADDER_EVENTS, st.sets(st.sampled_from(ACCOUNTS)))
def test_ladders_restored_whole_or_split_by_account_decide_as_the_original(before: list, after: list,
                                                                           mine: set[str]) -> None:
    a = restored_ladder({})
    t = 0
    for event in before:
        t += event[2]
        escalate(a, event, t)
    accounts = {account: a.account_state(account) for account in a.accounts()}
    assert plain(accounts) and {account for account in ACCOUNTS if a.account_state(account) is not None} == \
        a.accounts()
    whole = restored_ladder(accounts)
    split = {True: restored_ladder({k: v for k, v in accounts.items() if k in mine}),
             False: restored_ladder({k: v for k, v in accounts.items() if k not in mine})}
    for event in after:
        t += event[2]
        expected = escalate(a, event, t)
        assert escalate(whole, event, t) == expected
        assert escalate(split[event[1] in mine], event, t) == expected
    for account in ACCOUNTS:
        assert whole.account_state(account) == split[account in mine].account_state(account) == \
            a.account_state(account)
    whole.drop_account("a")
    assert whole.account_state("a") is None and "a" not in whole.accounts()


# ---------------------------------------------------------------------------- circuit breakers

CIRCUIT_EVENTS = st.lists(st.one_of(
    st.tuples(st.just("move"), st.sampled_from(UNDERLYINGS), st.integers(0, 3_000), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("time"), st.sampled_from(UNDERLYINGS), st.integers(0, 3_000)),
), max_size=40)
PAUSES = CircuitParams(pause_ms=(1_000, 3_000, 6_000))


def trip(breakers: CircuitBreakers, event: tuple, t: int) -> tuple:
    match event:
        case ("move", underlying, _, level, cleared):
            changes = breakers.on_breach(Breach(BreachKind.INDEX_MOVE, underlying, t, 0.1, 0.07, t, t, (f"i{t}",),
                                                level=0 if cleared else level, cleared=cleared))
        case ("time", underlying, _):
            changes = breakers.on_time(underlying, t)
    return changes, breakers.trading_state(event[1]), breakers.allows_risk_increase(event[1])


@settings(max_examples=150, deadline=None)
@given(CIRCUIT_EVENTS, CIRCUIT_EVENTS)
def test_restored_circuit_breakers_halt_and_resume_as_the_original(before: list, after: list) -> None:
    a, t = CircuitBreakers(PAUSES), 0
    for event in before:
        t += event[2]
        trip(a, event, t)
    b = CircuitBreakers.from_state(round_trip("CircuitBreakersState", a.state()), PAUSES)
    assert plain(a.state()) and b.state() == a.state()
    for event in after:
        t += event[2]
        assert trip(b, event, t) == trip(a, event, t)
    assert b.state() == a.state()


# ---------------------------------------------------------------------------- market board

def definition(instrument: str, t: int, active: bool) -> dict:
    """A decoded ``InstrumentDefinition``, every field present as the codec gives it."""
    return {"instrument": instrument, "kind": "perpetual", "underlying": instrument.split("-")[0],
            "quote_currency": "USD", "settlement_currency": "USDC", "inverse": False, "strike": None,
            "expiry_ms": None, "option_type": None, "contract_size": 1.0, "tick_size": 0.5, "min_trade_amount": 0.0,
            "is_active": active, "event_time_ms": t}


def depth(instrument: str, t: int, size: float, banded: bool) -> dict:
    levels = {"bids": [{"price": 99.5, "quantity": size}, {"price": 90.0, "quantity": 1.0}],
              "asks": [{"price": 100.5, "quantity": size / 2}]} if size else {"bids": [], "asks": []}
    bands = [{"band_bps": 100, "bid_quantity": size, "ask_quantity": 2.0}] if banded else []
    return {"instrument": instrument, **levels, "bands": bands, "event_time_ms": t}


prices = st.sampled_from([90.0, 100.0, 111.5])
ivs = st.sampled_from([None, 0.0, 0.45, 0.8])  # a mark's IV of 0: none
BOARD_EVENTS = st.lists(st.one_of(
    st.tuples(st.just("IndexPrice"), st.sampled_from(UNDERLYINGS), steps, prices),
    st.tuples(st.just("VolatilityUpdate"), st.sampled_from(UNDERLYINGS), steps,
              st.sampled_from([None, "BTC-27DEC26-60000-C"]), st.sampled_from([None, 0.45, 0.8])),
    st.tuples(st.just("MarkPrice"), st.sampled_from(INSTRUMENTS), steps, prices, ivs),
    st.tuples(st.just("OrderBookDepth"), st.sampled_from(INSTRUMENTS), steps, st.sampled_from([0.0, 50.0, 5e3]),
              st.booleans()),
    st.tuples(st.just("InstrumentDefinition"), st.sampled_from(INSTRUMENTS), steps, st.booleans()),
), max_size=50)


def record_of(event: tuple) -> dict:
    match event:
        case ("IndexPrice", underlying, t, price):
            return {"underlying": underlying, "price": price, "event_time_ms": t}
        case ("VolatilityUpdate", underlying, t, instrument, iv):
            return {"underlying": underlying, "instrument": instrument, "iv": iv, "event_time_ms": t}
        case ("MarkPrice", instrument, t, mark, iv):
            return {"instrument": instrument, "underlying": instrument.split("-")[0], "mark_price": mark,
                    "mark_iv": iv, "event_time_ms": t}
        case ("OrderBookDepth", instrument, t, size, banded):
            return depth(instrument, t, size, banded)
        case ("InstrumentDefinition", instrument, t, active):
            return definition(instrument, t, active)


def board_outputs(board: MarketBoard, events: list[tuple]) -> list:
    out = []
    for event in events:
        record, value = event[0], record_of(event)
        if record == "IndexPrice":
            moved = board.apply_indexes([value])[0]
        elif record == "MarkPrice":
            moved = board.apply_marks([value])[0]
        else:
            moved = board.apply(record, value)
        out.append((moved, board.market_state(event[2], set(board.index)), board.conditions({"BTC": 0.5})))
    return out


@settings(max_examples=150, deadline=None)
@given(BOARD_EVENTS, BOARD_EVENTS, st.sampled_from([0.6, 0.35]))
def test_a_restored_market_board_values_as_the_original(before: list, after: list, default_vol: float) -> None:
    events = timed(before + after)
    a = MarketBoard(default_vol)
    board_outputs(a, events[:len(before)])
    b = MarketBoard.from_state(round_trip("MarketBoardState", a.state()))
    assert plain(a.state()) and b.state() == a.state() and b == a
    assert board_outputs(b, events[len(before):]) == board_outputs(a, events[len(before):])
    assert b.state() == a.state()


def test_a_market_board_gives_only_market_states_the_constructor_accepts() -> None:
    board = MarketBoard(0.5, {"BTC": 30_000.0, "ETH": 2_000.0}, {"ETH": 0.7}, {"BTC-PERPETUAL": 0.0})
    assert board.market_state(7, {"BTC", "ETH"}) == MarketState(
        7, {"BTC": UnderlyingMarket(30_000.0, 0.5), "ETH": UnderlyingMarket(2_000.0, 0.7)})
    cases = (({"default_vol": 0.0}, "underlyings.BTC.vol"),
             ({"index": {"BTC": math.nan, "ETH": 2_000.0}}, "underlyings.BTC.index"),
             ({"vol": {"BTC": -0.5, "ETH": 0.7}}, "underlyings.BTC.vol"),
             ({"instrument_iv": {"BTC-PERPETUAL": math.inf}}, "instruments.BTC-PERPETUAL.iv"))
    for bad, message in cases:
        restored = MarketBoard.from_state({**board.state(), **bad})  # a snapshot restores as it was
        assert restored.market_state(7, {"ETH"}).underlyings == {"ETH": UnderlyingMarket(2_000.0, 0.7)}
        with pytest.raises(MarketError, match=message):
            restored.market_state(7, {"BTC", "ETH"})
    board.apply_indexes([{"underlying": "BTC", "price": -5.0, "event_time_ms": 8}])  # a replay's unvalidated record
    with pytest.raises(MarketError, match="underlyings.BTC.index: expected a positive finite number, got -5.0"):
        board.market_state(8, {"BTC"})
    with pytest.raises(ValueError, match="apply_indexes"):
        board.apply("IndexPrice", {"underlying": "BTC", "price": 1.0, "event_time_ms": 8})


# ---------------------------------------------------------------------------- index history

INDEX_TICKS = st.lists(st.tuples(st.one_of(st.integers(-2_000, 1_500), st.integers(0, 40_000)), st.floats(0.5, 2.0)),
                       max_size=80)


def history_outputs(history: IndexHistory, ticks: list[tuple[int, float]]) -> list:
    out = []
    for t, price in ticks:
        history.append(t, price)
        out.append((len(history), history.velocity(t), history.realised_vol()))
    return out


def priced(steps: list[tuple[int, float]]) -> list[tuple[int, float]]:
    clock, price, out = 0, 100.0, []
    for step, factor in steps:
        t, price = clock + step, price * factor
        clock = max(clock, t)
        out.append((t, price))
    return out


@settings(max_examples=150, deadline=None)
@given(INDEX_TICKS, INDEX_TICKS)
def test_a_restored_index_history_gives_the_original_figures(before: list, after: list) -> None:
    """Exactly: the running sum is carried as it stands, not re-added."""
    ticks = priced(before + after)
    a = IndexHistory()
    history_outputs(a, ticks[:len(before)])
    b = IndexHistory.from_state(round_trip("IndexHistoryState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    assert history_outputs(b, ticks[len(before):]) == history_outputs(a, ticks[len(before):])
    assert b.state() == a.state()
