"""The venue-scale workload of issues 20 and 21, as the decoded records the engine takes.

BTC and ETH; an option chain of ``options`` instruments (eight expiries, calls and puts,
strikes nearest the money first), each with a ``MarkPrice`` carrying its mark and its implied
vol (``mark_iv``) every ``cadence_ms``, as a venue's 100 ms ticker does; per underlying every
``cadence_ms`` an ``IndexPrice``, the perpetual's ``MarkPrice`` and its ``OrderBookDepth`` (ten
levels a side), and every second an underlying-level ``VolatilityUpdate``. ``accounts``
accounts hold ``positions_per_account`` positions each (a perpetual and options, most on one
underlying, a fifth on both), funded at a margin ratio drawn from ``ratio_range`` as the risk
core values them at the start. ``crash`` is the fraction the index falls, between 20 % and
60 % of the feed, with implied vols rising as it falls; 0 is a calm random walk.

Seeded: the same ``FeedSpec`` gives the same records, in the same order. Every record passes
``pipelines.events.validation.Validator`` (tests/bench/test_venue_feed.py).

    .venv/bin/python bench/venue_feed.py --out venue.avro [--accounts N] [--options N] [--seconds S] [--crash F]

writes the feed as a replay file (``pipelines.events.files``), the input of the Kafka benchmarks.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.engine.shards import partition_for  # noqa: E402
from pipelines.errors import UserError  # noqa: E402
from pipelines.events.codec import Codec, default_codec  # noqa: E402
from pipelines.events.files import write_replay  # noqa: E402
from pipelines.risk.black76 import black76_price  # noqa: E402
from pipelines.risk.book import Book, revalue_book  # noqa: E402
from pipelines.risk.instruments import Instrument, InstrumentTable, parse_instrument  # noqa: E402
from pipelines.risk.market import MarketState, UnderlyingMarket  # noqa: E402
from pipelines.scenarios.generate import T0, TOPIC_OF, depth_record, expiry_code  # noqa: E402
from pipelines.topics import spec_for  # noqa: E402

SPOT = {"BTC": 60_000.0, "ETH": 3_000.0}
BASE_IV = {"BTC": 0.55, "ETH": 0.70}
EXPIRY_DAYS = (1, 2, 7, 14, 30, 60, 90, 180)
DAY_MS = 86_400_000
YEAR_MS = 365.0 * DAY_MS
PERP_DEPTH_USD = 5_000_000.0  # one side within 1 % of mid, calm
MARKET_START_MS = T0 + 100  # the book's records sit at T0 .. T0 + 50; the market follows

Event = tuple[str, str, dict[str, Any]]  # (topic, record, decoded value), as ``Generated.events``
Row = tuple[str, int, int, str, dict[str, Any]]  # (topic, partition, offset, record, value): ``replay_dicts``


@dataclasses.dataclass(frozen=True)
class FeedSpec:
    accounts: int = 10_000
    positions_per_account: int = 5
    options: int = 1_200
    seconds: float = 10.0  # of market, after the book
    crash: float = 0.0  # fraction the index falls between 20 % and 60 % of the feed
    cadence_ms: int = 100
    ratio_range: tuple[float, float] = (0.15, 0.7)  # starting maintenance / equity
    seed: int = 21

    def check(self) -> None:
        """Raise UserError naming the first field out of range."""
        if self.accounts < 1 or self.options < 2 or self.positions_per_account < 1:
            raise UserError("venue feed: accounts and positions per account must be >= 1, options >= 2")
        if not self.seconds > 0 or self.cadence_ms < 1:
            raise UserError("venue feed: seconds must be > 0 and the cadence >= 1 ms")
        if not 0 <= self.crash < 0.95:
            raise UserError(f"venue feed: crash is a fraction in [0, 0.95), not {self.crash}")
        low, high = self.ratio_range
        if not 0 < low <= high < 1:
            raise UserError(f"venue feed: the ratio range must lie in (0, 1), not {self.ratio_range}")


def option_chain(options: int) -> list[Instrument]:
    """``options`` options over BTC and ETH: per underlying, eight expiries x calls and puts,
    strikes from the money outwards, so a smaller chain is the same chain's nearest strikes."""
    chain: list[Instrument] = []
    for n, (underlying, spot) in enumerate(SPOT.items()):
        wanted = options // len(SPOT) + (options % len(SPOT) if n == 0 else 0)
        lines = len(EXPIRY_DAYS) * 2
        per_line = math.ceil(wanted / lines)
        tick = 10.0 ** (math.floor(math.log10(spot)) - 2)
        strikes = np.unique(np.round(spot * np.linspace(0.5, 1.6, per_line) / tick) * tick)
        by_distance = sorted(strikes.tolist(), key=lambda k: (abs(k - spot), k))
        names = [f"{underlying}-{expiry_code(T0 + days * DAY_MS)}-{int(strike)}-{cp}"
                 for strike in by_distance for days in EXPIRY_DAYS for cp in "CP"]
        chain += [parse_instrument(name) for name in names[:wanted]]
    return chain


def perpetuals() -> list[Instrument]:
    return [parse_instrument(f"{u}-PERPETUAL") for u in SPOT]


def feed(spec: FeedSpec) -> list[Event]:
    """The book's records, then the market's, in event-time order."""
    spec.check()
    chain = option_chain(spec.options)
    return book_events(spec, chain) + list(market_events(spec, chain))


@dataclasses.dataclass(frozen=True)
class Opening:
    """The accounts at the start: each one's legs (instrument, quantity), its USDC collateral,
    and every held instrument's opening price (the positions' average price)."""

    legs: list[list[tuple[Instrument, float]]]
    collateral: list[float]
    prices: dict[str, float]

    def book(self) -> Book:
        """The accounts as the risk core's ``Book`` (account names as in the feed)."""
        instruments = sorted({i.name: i for legs in self.legs for i, _ in legs}.values(), key=lambda i: i.name)
        row = {i.name: k for k, i in enumerate(instruments)}
        held = [(i, q) for legs in self.legs for i, q in legs]
        return Book.from_arrays([account_name(a) for a in range(len(self.legs))], np.array(self.collateral),
                                InstrumentTable.of(instruments),
                                np.repeat(np.arange(len(self.legs)), [len(legs) for legs in self.legs]),
                                np.array([row[i.name] for i, _ in held]), np.array([q for _, q in held]),
                                np.array([self.prices[i.name] for i, _ in held]))


def account_name(a: int) -> str:
    return f"venue-{a:06d}"


def opening(spec: FeedSpec, chain: list[Instrument]) -> Opening:
    """Per account a perpetual and ``positions_per_account - 1`` options, funded so that its
    maintenance margin at the opening market (the risk core's scenario margin) is a ratio drawn
    from ``ratio_range`` of its collateral (at least 1,000 USDC)."""
    rng = np.random.default_rng(spec.seed)
    by_underlying = {u: [i for i in chain if i.underlying == u] for u in SPOT}
    perpetual = {i.underlying: i for i in perpetuals()}
    legs: list[list[tuple[Instrument, float]]] = []
    for a in range(spec.accounts):
        underlying = "BTC" if a % 3 else "ETH"
        mixed = a % 5 == 0  # a fifth of the accounts hold options on both underlyings
        pool = chain if mixed else by_underlying[underlying]
        picks = rng.choice(len(pool), size=min(spec.positions_per_account - 1, len(pool)), replace=False)
        perp_units = rng.uniform(0.5, 5.0) * 60_000.0 / SPOT[underlying]
        account_legs = [(perpetual[underlying], float(rng.choice([-1.0, 1.0]) * perp_units))]
        for p in sorted(picks.tolist()):
            option = pool[p]
            units = rng.uniform(1.0, 10.0) * 60_000.0 / SPOT[option.underlying]
            account_legs.append((option, float(rng.choice([-1.0, 1.0]) * units)))
        legs.append([(i, round(q, 4)) for i, q in account_legs])
    prices = opening_prices([i for account_legs in legs for i, _ in account_legs])
    unfunded = Opening(legs, [0.0] * len(legs), prices)
    maintenance = revalue_book(unfunded.book(), opening_market(chain)).maintenance
    ratio = rng.uniform(*spec.ratio_range, len(legs))
    collateral = [round(max(m / r, 1_000.0), 2) for m, r in zip(maintenance.tolist(), ratio.tolist())]
    return Opening(legs, collateral, prices)


def opening_market(chain: list[Instrument]) -> MarketState:
    """The market the feed opens on: spot, at-the-money vols and each option's smile vol."""
    return MarketState(T0, {u: UnderlyingMarket(SPOT[u], BASE_IV[u]) for u in SPOT},
                       {i.name: float(smile_iv(BASE_IV[i.underlying], np.array([i.strike]), SPOT[i.underlying])[0])
                        for i in chain if i.strike is not None})


def book_events(spec: FeedSpec, chain: list[Instrument]) -> list[Event]:
    """Per account a collateral deposit, then its positions (sequence 1, 2, ...), at T0 + 0..50 ms."""
    start = opening(spec, chain)
    events: list[tuple[int, int, Event]] = []
    for a, (legs, amount) in enumerate(zip(start.legs, start.collateral)):
        account, t = account_name(a), T0 + a % 51
        events.append((t, a, (TOPIC_OF["CollateralUpdate"], "CollateralUpdate",
                              {"account": account, "asset": "USDC", "amount": amount, "change": amount,
                               "reason": "deposit", "sequence": 1, "event_time_ms": t})))
        for seq, (instrument, qty) in enumerate(legs, 1):
            events.append((t, a, (TOPIC_OF["PositionUpdate"], "PositionUpdate",
                                  {"account": account, "instrument": instrument.name, "quantity": qty,
                                   "average_price": start.prices[instrument.name], "sequence": seq,
                                   "event_time_ms": t})))
    events.sort(key=lambda e: (e[0], e[1]))  # stable: each account's records keep their order
    return [e for _, _, e in events]


def opening_prices(instruments: Iterable[Instrument]) -> dict[str, float]:
    """Each instrument's price at the opening market (an option's Black-76 value at its smile vol)."""
    out = {}
    for name, i in {i.name: i for i in instruments}.items():
        if i.strike is None:
            out[name] = SPOT[i.underlying]
        else:
            t = (i.expiry_ms - T0) / YEAR_MS
            iv = smile_iv(BASE_IV[i.underlying], np.array([i.strike]), SPOT[i.underlying])[0]
            out[name] = round(float(black76_price(SPOT[i.underlying], i.strike, t, iv, 0.0, bool(i.is_call))), 6)
    return out


def smile_iv(atm_iv: float | np.ndarray, strike: np.ndarray, index: float) -> np.ndarray:
    """A symmetric smile: the at-the-money vol, higher away from the money."""
    return atm_iv * (1.0 + 0.8 * np.log(strike / index) ** 2)


def index_paths(spec: FeedSpec, steps: int) -> dict[str, np.ndarray]:
    """Index per underlying at each step: a random walk at its implied vol, with the crash's
    fall spread evenly in log terms over the steps between 20 % and 60 % of the feed."""
    rng = np.random.default_rng(spec.seed + 1)
    k = np.arange(steps)
    in_fall = np.clip((k - 0.2 * steps) / (0.4 * steps), 0.0, 1.0)
    paths = {}
    for underlying, spot in SPOT.items():
        sigma = BASE_IV[underlying] * math.sqrt(spec.cadence_ms / YEAR_MS)
        walk = np.cumsum(rng.normal(0.0, sigma, steps))
        paths[underlying] = spot * np.exp(walk + in_fall * math.log(1.0 - spec.crash))
    return paths


def market_events(spec: FeedSpec, chain: list[Instrument]) -> Iterator[Event]:
    """Every ``cadence_ms`` from MARKET_START_MS for ``seconds``: per underlying its index, then
    its perpetual's mark and depth, then its options' marks; every second its implied vol."""
    steps = int(spec.seconds * 1000 // spec.cadence_ms)
    paths = index_paths(spec, steps)
    options = {u: [i for i in chain if i.underlying == u] for u in SPOT}
    strikes = {u: np.array([i.strike for i in options[u]]) for u in SPOT}
    expiries = {u: np.array([i.expiry_ms for i in options[u]], dtype=np.float64) for u in SPOT}
    calls = {u: np.array([bool(i.is_call) for i in options[u]]) for u in SPOT}
    per_second = max(1, 1000 // spec.cadence_ms)
    for k in range(steps):
        t = MARKET_START_MS + k * spec.cadence_ms
        for underlying, spot in SPOT.items():
            index = round(float(paths[underlying][k]), 2)
            drawdown = max(0.0, 1.0 - index / spot)
            atm = BASE_IV[underlying] * (1.0 + 2.0 * drawdown)  # vol rises as the index falls, depth thins
            yield TOPIC_OF["IndexPrice"], "IndexPrice", {
                "underlying": underlying, "index_name": f"{underlying.lower()}_usd", "price": index, "event_time_ms": t}
            if k % per_second == 0:
                yield TOPIC_OF["VolatilityUpdate"], "VolatilityUpdate", {
                    "underlying": underlying, "instrument": None, "iv": round(atm, 6), "smile": [], "source": "venue",
                    "event_time_ms": t}
            perp = f"{underlying}-PERPETUAL"
            yield TOPIC_OF["MarkPrice"], "MarkPrice", _mark(perp, underlying, index, index, None, t)
            depth = PERP_DEPTH_USD * max(0.2, 1.0 - 2.0 * drawdown)
            yield TOPIC_OF["OrderBookDepth"], "OrderBookDepth", depth_record(perp, t, index, depth, k)
            ivs = smile_iv(atm, strikes[underlying], index)
            years = np.maximum(expiries[underlying] - t, 0.0) / YEAR_MS
            marks = black76_price(index, strikes[underlying], years, ivs, 0.0, calls[underlying])
            for option, mark, iv in zip(options[underlying], np.round(marks, 6).tolist(), np.round(ivs, 6).tolist()):
                yield TOPIC_OF["MarkPrice"], "MarkPrice", _mark(option.name, underlying, mark, index, iv, t)


def _mark(instrument: str, underlying: str, mark: float, index: float, iv: float | None, t: int) -> dict[str, Any]:
    spread = mark * 0.002
    return {"instrument": instrument, "underlying": underlying, "mark_price": mark, "index_price": index,
            "underlying_price": index, "mark_iv": iv, "best_bid": round(mark - spread, 6),
            "best_ask": round(mark + spread, 6), "open_interest": None, "event_time_ms": t,
            "largest_holder_share": None}


def rows(events: Iterable[Event], codec: Codec | None = None) -> Iterator[Row]:
    """The feed as Kafka would hold it: each record on its topic's partition for its key (Kafka's
    partitioner, ``partition_for``; account records by account), offsets counted per
    topic-partition: what ``load`` reads back from ``write_feed``'s file."""
    codec = codec or default_codec()
    offsets: dict[tuple[str, int], int] = {}
    for topic, record, value in events:
        partition = partition_for(codec.key(record, value).decode(), spec_for(topic).partitions)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        yield topic, partition, offset, record, value


def write_feed(path: str | Path, events: Iterable[Event], codec: Codec | None = None) -> int:
    """The feed as a replay file (real codec, the partitions and offsets of ``rows``); returns its record count."""
    from pipelines.scenarios.generate import to_replay_records

    codec = codec or default_codec()
    return write_replay(path, to_replay_records(events, codec), codec=codec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="replay file to write")
    defaults = FeedSpec()
    parser.add_argument("--accounts", type=int, default=defaults.accounts)
    parser.add_argument("--positions", type=int, default=defaults.positions_per_account, help="per account")
    parser.add_argument("--options", type=int, default=defaults.options)
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="of market")
    parser.add_argument("--crash", type=float, default=defaults.crash, help="fraction the index falls (0: calm)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args()
    spec = FeedSpec(args.accounts, args.positions, args.options, args.seconds, args.crash, seed=args.seed)
    try:
        events = feed(spec)
        n = write_feed(args.out, events)
    except (UserError, OSError) as exc:
        print(f"venue_feed: {exc}", file=sys.stderr)
        return 2
    print(f"{n:,} records ({spec.accounts:,} accounts, {spec.options:,} options, {spec.seconds:g} s of market) "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
