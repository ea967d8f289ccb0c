"""Turn a ``Scenario`` and a seed into events: the market stream and an account population.

``generate(scenario, seed)`` returns ``Generated``: ``events`` as ``(topic, record, value)`` in
event-time order (the decoded Avro dicts of ``schemas/``), the accounts, the hedged accounts and
the venue's liquidity (insurance fund, backstop LPs). ``to_replay_records`` frames them as a
recording (real codec, Kafka-compatible keys and partitions, per-partition offsets), which
``write_recording`` writes to an Avro container file — byte-identical for the same seed.

Population (per scenario, seeded): leveraged long and short perpetuals, short puts, long calls,
delta-hedged option books (short calls + long perpetual, in ``EngineParams.hedged_accounts``), an
LP market-making book (short strangle, hedged) and, when the scenario stages them, a whale that
withdraws collateral before the fall, and a pump's actor (``Scenario.pump``: a large short and
the same long, whose buys lift the perpetual's mark above its index, ``pump_marks``). Collateral
is calibrated through the risk core: each account starts at a margin ratio (maintenance /
equity) drawn from ``ratio_range``.

A coin-margined scenario (``Scenario.coin_margined``) lists its options with
``InstrumentDefinition`` records (inverse, settled in the underlying, one coin per contract, as
Deribit's), prices their premiums in coin (the Black-76 USD price over the index) and gives the
accounts holding them their underlying as collateral (perpetuals stay linear and USDC-margined).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipelines.engine.shards import partition_for
from pipelines.events.codec import Codec, default_codec
from pipelines.events.files import replay_record
from pipelines.risk.black76 import black76_price
from pipelines.risk.instruments import perpetual_of
from pipelines.scenarios.library import Pump, Scenario
from pipelines.scenarios.model import UnderlyingPath, depth_path, iv_path, move_progress, price_path
from pipelines.topics import spec_for

T0 = 1_795_000_000_000  # 2026-11-18T08:53:20Z: the event time bench inputs start at (scenarios: their date)
TOPIC_OF = {
    "IndexPrice": "backstop.market.index", "MarkPrice": "backstop.market.mark",
    "VolatilityUpdate": "backstop.market.volatility", "OrderBookDepth": "backstop.market.depth",
    "OraclePrice": "backstop.market.oracle", "PositionUpdate": "backstop.positions",
    "CollateralUpdate": "backstop.collateral", "InstrumentDefinition": "backstop.instruments",
}
KEY_FIELD = {"IndexPrice": "underlying", "MarkPrice": "instrument", "VolatilityUpdate": "underlying",
             "OrderBookDepth": "instrument", "OraclePrice": "underlying", "PositionUpdate": "account",
             "CollateralUpdate": "account", "InstrumentDefinition": "instrument"}
#: replay-file header key of a scenario recording's ``scenario_header`` (JSON)
SCENARIO_META = "backstop.scenario"
LEVELS = 10
LEVEL_STEP = 0.0008  # 8 bp between levels: the ten levels sit inside the 1 % band


@dataclasses.dataclass(frozen=True)
class AccountSpec:
    account: str
    kind: str
    legs: tuple[tuple[str, float, float], ...]  # (instrument, quantity, average price)
    collateral_usd: float
    hedged: bool = False


@dataclasses.dataclass
class Generated:
    scenario: Scenario
    seed: int
    t0: int
    events: list[tuple[str, str, dict[str, Any]]]
    accounts: list[AccountSpec]

    @property
    def hedged(self) -> frozenset[str]:
        return frozenset(a.account for a in self.accounts if a.hedged)

    @property
    def end_ms(self) -> int:
        return self.t0 + self.scenario.duration_s * 1000


def expiry_code(ms: int) -> str:
    day = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return day.strftime("%d%b%y").upper()


def strike_text(strike: float) -> str:
    return str(int(strike)) if strike >= 1 else f"0d{str(round(strike, 6)).split('.')[1]}"


def round_strike(price: float) -> float:
    step = 10 ** max(math.floor(math.log10(price)) - 1, 0) * (5 if price > 1000 else 1)
    return max(step, round(price / step) * step)


def option_name(underlying: str, expiry_ms: int, strike: float, call: bool) -> str:
    return f"{underlying}-{expiry_code(expiry_ms)}-{strike_text(strike)}-{'C' if call else 'P'}"


def option_price(index: float, strike: float, expiry_ms: int, now_ms: int, iv: float, call: bool) -> float:
    t = max(expiry_ms - now_ms, 0) / (365.0 * 86_400_000.0)
    return float(black76_price(index, strike, t, iv, 0.0, call))


def option_definition(name: str, underlying: str, strike: float, expiry_ms: int, call: bool, t: int) -> dict[str, Any]:
    """A Deribit-style coin-settled option's ``InstrumentDefinition``: inverse, settled in its
    underlying, one coin per contract, premiums in coin."""
    return {"instrument": name, "kind": "option", "underlying": underlying, "quote_currency": "USD",
            "settlement_currency": underlying, "inverse": True, "strike": strike, "expiry_ms": expiry_ms,
            "option_type": "call" if call else "put", "contract_size": 1.0, "tick_size": 0.0005,
            "min_trade_amount": 0.1, "is_active": True, "event_time_ms": t}


def depth_record(instrument: str, t: int, mid: float, one_side_usd: float, sequence: int) -> dict[str, Any]:
    qty = one_side_usd / mid / LEVELS
    return {"instrument": instrument,
            "bids": [{"price": mid * (1 - LEVEL_STEP * i), "quantity": qty} for i in range(1, LEVELS + 1)],
            "asks": [{"price": mid * (1 + LEVEL_STEP * i), "quantity": qty} for i in range(1, LEVELS + 1)],
            "bands": [], "sequence": sequence, "event_time_ms": t}


# ---------------------------------------------------------------------------- population

def population(rng: np.random.Generator, scenario: Scenario, t0: int, ratio_range: tuple[float, float],
               expiry_ms: int) -> list[tuple[str, str, list[tuple[str, float, float]], float, bool]]:
    """(account, kind, legs, target margin ratio, hedged) — collateral is calibrated afterwards."""
    spots = {u.underlying: u.price for u in scenario.underlyings}
    ivs = {u.underlying: u.iv for u in scenario.underlyings}
    with_options = [u.underlying for u in scenario.underlyings if u.options]
    out = []
    kinds = ["long-perp", "short-perp", "short-put", "long-call", "hedged-book"]
    per_kind = max(1, (scenario.accounts - 1) // len(kinds))
    for kind in kinds:
        for i in range(per_kind):
            u = scenario.underlyings[i % len(scenario.underlyings)].underlying
            if kind in ("short-put", "long-call", "hedged-book") and not with_options:
                continue
            if kind in ("short-put", "long-call", "hedged-book") and u not in with_options:
                u = with_options[i % len(with_options)]
            spot = spots[u]
            notional = float(rng.lognormal(math.log(400_000.0), 0.6))
            ratio = float(rng.uniform(*ratio_range))
            qty = notional / spot
            legs: list[tuple[str, float, float]] = []
            hedged = False
            if kind == "long-perp":
                legs = [(perpetual_of(u), qty, spot)]
            elif kind == "short-perp":
                legs = [(perpetual_of(u), -qty, spot)]
            else:
                strike = round_strike(spot * (0.85 if kind == "short-put" else 1.1))
                call = kind != "short-put"
                name = option_name(u, expiry_ms, strike, call)
                premium = option_price(spot, strike, expiry_ms, t0, ivs[u], call)
                sign = 1.0 if kind == "long-call" else -1.0
                legs = [(name, sign * qty, premium)]
                if kind == "hedged-book":
                    hedged = True
                    legs.append((perpetual_of(u), qty * 0.35, spot))  # ~ delta of a 10 % OTM call
                if kind == "long-call":
                    ratio = ratio_range[0]
            out.append((f"{kind}-{u.lower()}-{i:02d}", kind, legs, ratio, hedged))
    if with_options:  # the LP book: a market maker's short strangle, delta-hedged, well funded
        u = with_options[0]
        spot = spots[u]
        qty = 2_000_000.0 / spot
        legs = []
        for mult, call in ((0.9, False), (1.1, True)):
            strike = round_strike(spot * mult)
            legs.append((option_name(u, expiry_ms, strike, call), -qty,
                         option_price(spot, strike, expiry_ms, t0, ivs[u], call)))
        out.append((f"lp-book-{u.lower()}", "lp-book", legs, ratio_range[0], True))
    if scenario.withdraw is not None:
        u = scenario.underlyings[-1].underlying
        spot = spots[u]
        out.append(("whale-01", "whale", [(perpetual_of(u), 6_000_000.0 / spot, spot)], 0.2, False))
    if scenario.pump is not None:
        u = scenario.pump.underlying
        spot = spots[u]
        qty = scenario.pump.position_usd / spot
        out.append(("pump-short-01", "pump-short", [(perpetual_of(u), -qty, spot)], scenario.pump.short_ratio, False))
        out.append(("pump-long-01", "pump-long", [(perpetual_of(u), qty, spot)], ratio_range[0], False))
    return out


def open_interest(accounts, instrument: str) -> float:
    """The venue's open interest in ``instrument`` at t0, in contracts: the larger of its long and
    its short side among the accounts (on a venue both are equal; the population is not balanced)."""
    quantities = [qty for _, _, legs, _, _ in accounts for name, qty, _ in legs if name == instrument]
    return max(sum(q for q in quantities if q > 0), -sum(q for q in quantities if q < 0))


def largest_holder_share(accounts, instrument: str) -> float:
    """The largest position in ``instrument`` at t0 as a share of its open interest
    (``open_interest``): what a venue that knows every position publishes beside it."""
    largest = max(abs(qty) for _, _, legs, _, _ in accounts for name, qty, _ in legs if name == instrument)
    return min(largest / open_interest(accounts, instrument), 1.0)


def pump_marks(pump: Pump, spec, prices: np.ndarray, depth: np.ndarray, step_s: int) -> np.ndarray:
    """The perpetual's mark during a pump: the index lifted by the price impact of the actor's buys
    against the thin book. The actor buys ``buy_usd`` along the move (``move_progress``); what it
    bought over the last minute (the book's refill time, assumed), against the one-side depth within
    1 % of mid, lifts the mark by that many per cent: ``mark = index x (1 + 1 % x bought / depth)``,
    at most ``max_premium`` above the index."""
    bought = pump.buy_usd * np.diff(move_progress(spec, len(prices)), prepend=0.0)
    window = max(1, 60 // step_s)
    last_minute = np.convolve(bought, np.ones(window))[:len(prices)]
    premium = np.minimum(0.01 * last_minute / np.maximum(depth, 1.0), pump.max_premium)
    return prices * (1.0 + premium)


def coin_margined(accounts, spots: dict[str, float], t0: int) -> tuple[list, list[dict[str, Any]]]:
    """The population with its options coin-settled: each option leg's average price in coin (its
    USD premium over the index, as Deribit quotes), and the options' ``InstrumentDefinition``s."""
    from pipelines.risk.instruments import Kind, parse_instrument

    out, defined = [], {}
    for account, kind, legs, ratio, hedged in accounts:
        coin_legs = []
        for name, qty, avg in legs:
            inst = parse_instrument(name)
            if inst.kind is Kind.OPTION:
                spot = spots[inst.underlying]
                defined[name] = option_definition(name, inst.underlying, inst.strike, inst.expiry_ms, inst.is_call, t0)
                avg = round(avg / spot, 8)
            coin_legs.append((name, qty, avg))
        out.append((account, kind, coin_legs, ratio, hedged))
    return out, [defined[name] for name in sorted(defined)]


def calibrate(accounts, market_events: list[tuple[str, str, dict]], t0: int) -> dict[str, float]:
    """Maintenance margin of each account at t0 through the engine's own risk core."""
    from pipelines.engine.engine import Engine
    from pipelines.policy.signing import SigningKey

    engine = Engine(SigningKey("calibration", b"calibration-key-0000"))
    for _, record, value in market_events:
        engine.on_event(record, value, "calibration")
    for account, _, legs, _, _ in accounts:
        engine.on_event("CollateralUpdate", {"account": account, "asset": "USDC", "amount": 1e12, "change": 0.0,
                                             "reason": "snapshot", "sequence": 0, "event_time_ms": t0}, "calibration")
        for instrument, qty, avg in legs:
            engine.on_event("PositionUpdate", {"account": account, "instrument": instrument, "quantity": qty,
                                               "average_price": avg, "sequence": 0, "event_time_ms": t0}, "calibration")
    out = engine.flush()
    return {e["account"]: e["maintenance_margin_usd"] for e in out.exposures}


# ---------------------------------------------------------------------------- generation

Paths = dict[str, tuple[UnderlyingPath, np.ndarray, np.ndarray, np.ndarray]]  # underlying -> (spec, index, iv, depth)
Population = list[tuple[str, str, list[tuple[str, float, float]], float, bool]]  # ``population``'s accounts
class Interest(NamedTuple):
    """What a perpetual's marks publish of its open interest: contracts and the largest holder's
    share of them (None: not published)."""
    open_interest: float | None
    largest_holder_share: float | None


UNPUBLISHED = Interest(None, None)
Timed = tuple[int, int, str, str, dict]  # (event time, order among equal times, topic, record, value)


def generate(scenario: Scenario, seed: int | None = None, *,
             ratio_range: tuple[float, float] = (0.3, 0.95)) -> Generated:
    """The scenario's events for ``seed`` (default: the scenario's): market paths, then the
    accounts opened on them, sorted by event time. The same scenario and seed give the same
    events: the generator draws the paths, then the population, from one seeded stream."""
    seed = scenario.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    n = scenario.duration_s // scenario.step_s + 1
    t0 = scenario.start_ms
    paths = _paths(rng, scenario, n)
    accounts = population(rng, scenario, t0, ratio_range, _expiry_ms(t0))
    marks, interest = _marks(scenario, paths, accounts)
    definitions: list[dict[str, Any]] = []
    if scenario.coin_margined:
        accounts, definitions = coin_margined(accounts, {u.underlying: u.price for u in scenario.underlyings}, t0)
    market = _market_events(scenario, paths, marks, interest, definitions, n)
    margins = calibrate(accounts, [(topic, record, value) for t, _, topic, record, value in market if t == t0], t0)
    opened, specs = _account_events(scenario, accounts, margins, definitions, paths)
    events = market + opened
    events.sort(key=lambda e: (e[0], e[1]))
    return Generated(scenario, seed, t0, [(topic, record, value) for _, _, topic, record, value in events], specs)


def _expiry_ms(t0: int) -> int:
    """08:00 UTC of the day 30 days after ``t0``: the expiry of the generated options."""
    expiry_ms = t0 + 30 * 86_400_000
    return int(datetime.datetime.fromtimestamp(expiry_ms / 1000, tz=datetime.UTC)
               .replace(hour=8, minute=0, second=0, microsecond=0).timestamp() * 1000)


def _paths(rng: np.random.Generator, scenario: Scenario, n: int) -> Paths:
    """Per underlying, in the scenario's order: its index, implied vol and book depth paths."""
    paths: Paths = {}
    for spec in scenario.underlyings:
        prices = price_path(rng, spec, n, scenario.step_s)
        paths[spec.underlying] = (spec, prices, iv_path(prices, spec),
                                  depth_path(n, scenario.depth_usd * (1.0 if spec.options else 0.25), scenario.vacuum,
                                             prices, spec, scenario.depth_floor))
    return paths


def _marks(scenario: Scenario, paths: Paths, accounts: Population
           ) -> tuple[dict[str, np.ndarray], dict[str, Interest]]:
    """Per underlying, its perpetual's mark path (the index, but for a pumped underlying) and the
    open interest with its largest holder's share that its marks publish (only a pumped
    underlying's)."""
    marks = {u: prices for u, (_, prices, _, _) in paths.items()}
    interest: dict[str, Interest] = {}
    if scenario.pump is not None:
        u = scenario.pump.underlying
        spec, prices, _, depth = paths[u]
        marks[u] = pump_marks(scenario.pump, spec, prices, depth, scenario.step_s)
        interest[u] = Interest(round(open_interest(accounts, perpetual_of(u)), 8),
                               round(largest_holder_share(accounts, perpetual_of(u)), 6))
    return marks, interest


def _market_events(scenario: Scenario, paths: Paths, marks: dict[str, np.ndarray],
                   interest: dict[str, Interest], definitions: list[dict[str, Any]], n: int) -> list[Timed]:
    """Instrument definitions at the start, then per step and underlying: the index; every 10th
    step the vol; every 5th the perpetual's mark and depth, and the oracle (stuck in its windows)."""
    t0, step_ms = scenario.start_ms, scenario.step_s * 1000
    market: list[Timed] = [(t0, -1, TOPIC_OF["InstrumentDefinition"], "InstrumentDefinition", d) for d in definitions]
    seq = 0
    for k in range(n):
        t = t0 + k * step_ms
        frac = k / max(n - 1, 1)
        for order, (u, (_spec, prices, ivs, depth)) in enumerate(paths.items()):
            price = round(float(prices[k]), 8)
            seq += 1
            market.append((t, order, TOPIC_OF["IndexPrice"], "IndexPrice",
                           {"underlying": u, "index_name": f"{u.lower()}_usd", "price": price, "event_time_ms": t}))
            if k % 10 == 0:
                market.append((t, order, TOPIC_OF["VolatilityUpdate"], "VolatilityUpdate",
                               {"underlying": u, "instrument": None, "iv": round(float(ivs[k]), 6), "smile": [],
                                "source": "scenario", "event_time_ms": t}))
            if k % 5 == 0:
                published = interest.get(u, UNPUBLISHED)
                market.append((t, order, TOPIC_OF["MarkPrice"], "MarkPrice",
                               {"instrument": perpetual_of(u), "underlying": u,
                                "mark_price": round(float(marks[u][k]), 8),
                                "index_price": price, "underlying_price": price, "mark_iv": None, "best_bid": None,
                                "best_ask": None, "open_interest": published.open_interest,
                                "largest_holder_share": published.largest_holder_share, "event_time_ms": t}))
                market.append((t, order, TOPIC_OF["OrderBookDepth"], "OrderBookDepth",
                               depth_record(perpetual_of(u), t, price, float(depth[k]), seq)))
            if scenario.oracle and k % 5 == 0:
                window = next((w for w in scenario.oracle if w.covers(frac)), None)
                if window is None or window.level > 0:
                    stuck_at = int(window.start * (n - 1)) if window is not None else k
                    market.append((t, order, TOPIC_OF["OraclePrice"], "OraclePrice",
                                   {"underlying": u, "source": "oracle",
                                    "price": round(float(prices[stuck_at]), 8), "confidence": None,
                                    "publish_time_ms": t0 + stuck_at * step_ms, "event_time_ms": t}))
    return market


def _account_events(scenario: Scenario, accounts: Population, margins: dict[str, float],
                    definitions: list[dict[str, Any]], paths: Paths) -> tuple[list[Timed], list[AccountSpec]]:
    """Each account's deposit (collateral = its maintenance margin / its drawn ratio, at least
    $1,000; in the coin of its coin-margined legs) and positions, and the whale's withdrawal."""
    t0 = scenario.start_ms
    events: list[Timed] = []
    specs = []
    coin = {d["instrument"]: d["underlying"] for d in definitions}
    for n_acc, (account, kind, legs, ratio, hedged) in enumerate(accounts):
        collateral = round(max(margins.get(account, 0.0) / ratio, 1_000.0), 2)
        specs.append(AccountSpec(account, kind, tuple(legs), collateral, hedged))
        t = t0 + 1 + n_acc % 50
        asset = next((coin[name] for name, _, _ in legs if name in coin), "USDC")
        amount = collateral if asset == "USDC" else round(collateral / paths[asset][1][0], 8)
        events.append((t, 10, TOPIC_OF["CollateralUpdate"], "CollateralUpdate",
                       {"account": account, "asset": asset, "amount": amount, "change": amount,
                        "reason": "deposit", "sequence": 1, "event_time_ms": t}))
        for j, (instrument, qty, avg) in enumerate(legs):
            events.append((t, 11, TOPIC_OF["PositionUpdate"], "PositionUpdate",
                           {"account": account, "instrument": instrument, "quantity": qty, "average_price": avg,
                            "sequence": j + 1, "event_time_ms": t}))
        if kind == "whale" and scenario.withdraw is not None:
            tw = t0 + int(scenario.withdraw.start * scenario.duration_s) * 1000 + 500
            withdrawn = round(collateral * scenario.withdraw.level, 2)
            events.append((tw, 12, TOPIC_OF["CollateralUpdate"], "CollateralUpdate",
                           {"account": account, "asset": "USDC", "amount": round(collateral - withdrawn, 2),
                            "change": -withdrawn, "reason": "withdrawal", "sequence": 2, "event_time_ms": tw}))
    return events, specs


# ---------------------------------------------------------------------------- recording

def to_replay_records(events: Iterable[tuple[str, str, dict[str, Any]]], codec: Codec | None = None
                      ) -> Iterator[dict[str, Any]]:
    """Frame events as Kafka messages: real codec, key per the schema, Kafka's partition for the
    key, offsets counted per topic-partition, Kafka timestamp = event time."""
    codec = codec or default_codec()
    offsets: dict[tuple[str, int], int] = {}
    for topic, record, value in events:
        key = codec.key(record, value)
        partition = partition_for(key.decode(), spec_for(topic).partitions)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        yield replay_record(topic, codec.encode(record, value), key=key, partition=partition, offset=offset,
                            timestamp_ms=value["event_time_ms"], event_time_ms=value["event_time_ms"])


def write_recording(generated: Generated, path: str | Path, codec: Codec | None = None) -> int:
    """The scenario as a replay file (the format of ``pipelines.events.files``), its header carrying
    ``scenario_header`` under ``SCENARIO_META``. Avro container
    files carry a random 16-byte sync marker by default; here it is derived from the scenario
    and seed, so the same scenario and seed give byte-identical files."""
    import hashlib

    import fastavro

    from pipelines.events.files import REPLAY_RECORD, _metadata

    codec = codec or default_codec()
    schema = codec.schemas[REPLAY_RECORD].parsed
    marker = hashlib.sha256(f"{generated.scenario.name}|{generated.seed}".encode()).digest()[:16]
    records = list(to_replay_records(generated.events, codec))
    metadata = {**_metadata(codec), SCENARIO_META: json.dumps(scenario_header(generated), separators=(",", ":"))}
    with open(path, "wb") as fo:
        fastavro.writer(fo, schema, records, codec="deflate", metadata=metadata, sync_interval=64_000,
                        sync_marker=marker)
    return len(records)


def scenario_header(generated: Generated) -> dict[str, Any]:
    """What a scenario recording says about itself beyond its events (header ``SCENARIO_META``): the
    scenario's name and seed, and its delta-hedged accounts, which are engine parameters, not events."""
    return {"scenario": generated.scenario.name, "seed": generated.seed, "hedged_accounts": sorted(generated.hedged)}
