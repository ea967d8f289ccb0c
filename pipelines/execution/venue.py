"""The venue adapter interface, and a simulated venue realistic enough for tests and demos.

The interface is what an executor needs from any venue: place an order (idempotent on the
client order id, as every serious exchange API allows), look an order up by that id, cancel,
read the book and positions, set the trading state of an instrument or underlying (active,
halted, reduce-only after a halt: ``policy.circuit.TradingState``, enforced by
``policy.circuit.order_refusal``; applied only if newer than the state of record, answered once
per action id), freeze an account's withdrawals (and refuse its withdrawal
requests from then on), and run the liquidation waterfall for an account (on a real venue, its
liquidation engine; here, ``waterfall.liquidate``). A CCXT adapter would map ``place_order`` to
``create_order(..., params={"clientOrderId": ...})`` and ``order`` to ``fetch_order``.

``SimulatedVenue`` keeps what must survive an executor's death in SQLite — the order ledger
keyed by client order id, positions, trading states, withdrawal freezes, the insurance fund, LP
usage — so several executor processes share one venue and a redelivered action finds the order it
already placed. Every fill is against a book rebuilt at that moment from the latest depth
(configured, or fed with ``on_depth``) and placed at the mark: a liquidation's own ``mark``, else
the latest ``on_mark`` (``OrderBook.place_at``), so a fill is never better than the mark the book
is placed at. Latency and outages can be injected.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pipelines.execution.book import BUY, OrderBook
from pipelines.execution.waterfall import (
    AdlCandidate,
    Fill,
    InsuranceFund,
    LiquidityPool,
    LiquidityProvider,
    WaterfallParams,
    WaterfallResult,
    liquidate,
)
from pipelines.policy.circuit import STRICTNESS, TradingState, order_refusal, reduces_position, strictest
from pipelines.risk.instruments import underlying_of


class VenueError(Exception):
    """A venue refusal. ``transient`` errors (outage, timeout, rate limit) are retried; others are final."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclasses.dataclass(frozen=True)
class Order:
    client_order_id: str
    account: str
    instrument: str
    side: str
    quantity: float
    limit_price: float | None = None
    reduce_only: bool = False


@dataclasses.dataclass(frozen=True)
class OrderResult:
    client_order_id: str
    status: str  # filled | partially_filled | rejected
    filled: float
    avg_price: float | None
    fee_usd: float
    slippage_bps: float | None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class WithdrawalResult:
    account: str
    asset: str
    amount: float
    status: str  # accepted | rejected
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class StateChange:
    """What a ``set_trading_state`` came to. ``applied`` False: the state of record for the name is
    newer (``reason`` says which) and nothing moved."""

    applied: bool
    reason: str = ""


class Venue(Protocol):
    name: str

    def place_order(self, order: Order) -> OrderResult: ...
    def order(self, client_order_id: str) -> OrderResult | None: ...
    def cancel_order(self, client_order_id: str) -> bool: ...
    def book(self, instrument: str, mark: float | None = None) -> OrderBook: ...
    def positions(self, account: str) -> dict[str, float]: ...
    def set_trading_state(self, instrument_or_underlying: str, state: TradingState, as_of_ms: int,
                          action_id: str) -> StateChange: ...
    def freeze_withdrawals(self, account: str, reason: str) -> None: ...
    def request_withdrawal(self, account: str, asset: str, amount: float) -> WithdrawalResult: ...
    def liquidate(self, client_order_id: str, account: str, instrument: str, quantity: float, mark: float,
                  equity_usd: float, now_ms: int, steps: str = "all", close_all: bool = True) -> WaterfallResult: ...


@dataclasses.dataclass(frozen=True)
class SimulatedVenueConfig:
    """Books (``OrderBookDepth``-shaped dicts), LPs, fund, ADL book, fees and injected faults."""

    books: Mapping[str, Mapping[str, Any]]
    lps: Sequence[LiquidityProvider] = ()
    insurance_fund_usd: float = 0.0
    adl_candidates: Mapping[str, Sequence[AdlCandidate]] = dataclasses.field(default_factory=dict)
    waterfall: WaterfallParams = WaterfallParams()
    taker_fee: float = 0.0005
    latency_s: float = 0.0
    outage_calls: int = 0  # the first N calls fail with a transient error

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SimulatedVenueConfig:
        return cls(
            books=data["books"],
            lps=[LiquidityProvider(lp["lp_id"], lp["capacity_usd"], lp["per_minute_usd"], lp["discount"],
                                   frozenset(lp.get("instruments", ["*"]))) for lp in data.get("lps", [])],
            insurance_fund_usd=data.get("insurance_fund_usd", 0.0),
            adl_candidates={inst: [AdlCandidate(**c) for c in cands]
                            for inst, cands in data.get("adl_candidates", {}).items()},
            waterfall=WaterfallParams(**data.get("waterfall", {})),
            taker_fee=data.get("taker_fee", 0.0005),
            latency_s=data.get("latency_s", 0.0),
            outage_calls=data.get("outage_calls", 0),
        )


SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (client_order_id TEXT PRIMARY KEY, result TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS positions (account TEXT, instrument TEXT, quantity REAL, PRIMARY KEY (account, instrument));
CREATE TABLE IF NOT EXISTS trading_states (name TEXT PRIMARY KEY, state TEXT NOT NULL, as_of_ms INTEGER NOT NULL,
                                           action_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state_actions (action_id TEXT PRIMARY KEY, applied INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS withdrawal_freezes (account TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fund (id INTEGER PRIMARY KEY CHECK (id = 1), balance REAL, drawn REAL);
CREATE TABLE IF NOT EXISTS lp_usage (lp_id TEXT, at_ms INTEGER, usd REAL);
CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER);
"""
# A ledger from before state times: ``trading_states (name, state)``, restricted states only.
# Its rows keep their state and get this time, older than any action, so the next state action
# on the name applies (as every one did before).
UNKNOWN_TIME_MS = -(2**63)


class SimulatedVenue:
    name = "simulated"

    def __init__(self, config: SimulatedVenueConfig, ledger_path: str | Path) -> None:
        self.config = config
        self._depth: dict[str, Mapping[str, Any]] = dict(config.books)
        self._marks: dict[str, float] = {}
        self._db = sqlite3.connect(str(ledger_path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._migrate_trading_states()
        self._db.execute("INSERT OR IGNORE INTO fund VALUES (1, ?, 0)", (config.insurance_fund_usd,))
        self._db.execute("INSERT OR IGNORE INTO calls VALUES (1, 0)")

    def close(self) -> None:
        self._db.close()

    def _migrate_trading_states(self) -> None:
        """Bring a ``trading_states (name, state)`` table of an older ledger to the current columns
        (rows kept, time ``UNKNOWN_TIME_MS``, no action id); a current table is left alone. Under
        the write lock, so executors opening one old ledger at once migrate it once."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(trading_states)")}
            if "as_of_ms" not in columns:
                self._db.execute("ALTER TABLE trading_states RENAME TO trading_states_v1")
                self._db.execute("CREATE TABLE trading_states (name TEXT PRIMARY KEY, state TEXT NOT NULL, "
                                 "as_of_ms INTEGER NOT NULL, action_id TEXT NOT NULL)")
                self._db.execute("INSERT INTO trading_states SELECT name, state, ?, '' FROM trading_states_v1",
                                 (UNKNOWN_TIME_MS,))
                self._db.execute("DROP TABLE trading_states_v1")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ faults

    def _call(self) -> None:
        """Every venue call: injected latency, then the injected outage (shared across processes)."""
        if self.config.latency_s:
            time.sleep(self.config.latency_s)
        if self.config.outage_calls:
            (n,), = self._db.execute("UPDATE calls SET n = n + 1 WHERE id = 1 RETURNING n").fetchall()
            if n <= self.config.outage_calls:
                raise VenueError(f"simulated outage (call {n} of {self.config.outage_calls})", transient=True)

    # ------------------------------------------------------------------ queries

    def order(self, client_order_id: str) -> OrderResult | None:
        row = self._db.execute("SELECT result FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        return OrderResult(**json.loads(row[0])) if row else None

    def book(self, instrument: str, mark: float | None = None) -> OrderBook:
        """A fresh book from the latest depth of ``instrument``, placed at ``mark`` (default: the latest
        ``on_mark``; with neither, where the depth was quoted)."""
        try:
            book = OrderBook.from_depth(self._depth[instrument])
        except KeyError:
            raise VenueError(f"unknown instrument {instrument}", transient=False) from None
        mark = mark if mark is not None else self._marks.get(instrument)
        return book.place_at(mark) if mark is not None else book

    def positions(self, account: str) -> dict[str, float]:
        rows = self._db.execute("SELECT instrument, quantity FROM positions WHERE account = ?", (account,))
        return {instrument: qty for instrument, qty in rows if qty}

    def trading_state(self, instrument: str) -> TradingState:
        """The stricter of the states set for ``instrument`` and for its underlying (ACTIVE when none is)."""
        names = (instrument, underlying_of(instrument))
        return strictest(TradingState(state) for state, in
                         self._db.execute("SELECT state FROM trading_states WHERE name IN (?, ?)", names))

    def withdrawals_frozen(self, account: str) -> str | None:
        """Why ``account``'s withdrawals are frozen; None when they are not."""
        row = self._db.execute("SELECT reason FROM withdrawal_freezes WHERE account = ?", (account,)).fetchone()
        return None if row is None else row[0]

    @property
    def insurance_fund_usd(self) -> float:
        return self._db.execute("SELECT balance FROM fund WHERE id = 1").fetchone()[0]

    # ------------------------------------------------------------------ market data

    def on_depth(self, depth: Mapping[str, Any]) -> None:
        """An ``OrderBookDepth`` record: the instrument's book from now on (``backstop executor``
        feeds it the depth topic through ``market.MarketFeed``)."""
        self._depth[depth["instrument"]] = depth

    def on_mark(self, instrument: str, mark: float) -> None:
        """The instrument's latest mark (``backstop executor`` feeds it the mark topic): where its
        book is placed for orders that carry none."""
        self._marks[instrument] = mark

    # ------------------------------------------------------------------ commands

    def set_trading_state(self, instrument_or_underlying: str, state: TradingState, as_of_ms: int,
                          action_id: str) -> StateChange:
        """From now on orders on ``instrument_or_underlying`` (an underlying: every instrument on it)
        are judged by ``order_refusal`` in ``state`` -- if this change is newer than the state of
        record for the name: a later ``as_of_ms`` (the action's event time), or the same time and a
        state at least as strict (HALTED over REDUCING over ACTIVE: at one time the stricter wins).
        Otherwise nothing moves and the answer says which state is newer. Idempotent on
        ``action_id``: a repeated id gets its first answer and moves nothing, however the state
        has moved since. ACTIVE is kept as a row, so its time is remembered."""
        self._call()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT applied, reason FROM state_actions WHERE action_id = ?",
                                   (action_id,)).fetchone()
            if row is not None:
                self._db.execute("COMMIT")
                return StateChange(bool(row[0]), row[1])
            change = self._state_change(instrument_or_underlying, state, as_of_ms)
            if change.applied:
                self._db.execute("INSERT OR REPLACE INTO trading_states VALUES (?, ?, ?, ?)",
                                 (instrument_or_underlying, state.value, as_of_ms, action_id))
            self._db.execute("INSERT INTO state_actions VALUES (?, ?, ?)", (action_id, change.applied, change.reason))
            self._db.execute("COMMIT")
            return change
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _state_change(self, name: str, state: TradingState, as_of_ms: int) -> StateChange:
        """Whether ``state`` at ``as_of_ms`` supersedes the state of record for ``name``."""
        row = self._db.execute("SELECT state, as_of_ms FROM trading_states WHERE name = ?", (name,)).fetchone()
        if row is None:
            return StateChange(True)
        current, current_ms = TradingState(row[0]), row[1]
        if (as_of_ms, STRICTNESS[state]) >= (current_ms, STRICTNESS[current]):
            return StateChange(True)
        return StateChange(False, f"stale: {name} {current.value} at {current_ms} is newer than {state.value} "
                                  f"at {as_of_ms}")

    def freeze_withdrawals(self, account: str, reason: str) -> None:
        """Refuse ``account``'s withdrawals from now on (the first reason is kept; idempotent)."""
        self._call()
        self._db.execute("INSERT OR IGNORE INTO withdrawal_freezes VALUES (?, ?)", (account, reason))

    def request_withdrawal(self, account: str, asset: str, amount: float) -> WithdrawalResult:
        """A withdrawal request: refused, with the freeze's reason, while the account's withdrawals
        are frozen; accepted otherwise (the simulated venue keeps no balances to check)."""
        self._call()
        frozen = self.withdrawals_frozen(account)
        if frozen is not None:
            return WithdrawalResult(account, asset, amount, "rejected", f"withdrawals frozen: {frozen}")
        return WithdrawalResult(account, asset, amount, "accepted")

    def cancel_order(self, client_order_id: str) -> bool:
        self._call()
        return False  # market orders fill or die at once: there is never anything resting to cancel

    def place_order(self, order: Order) -> OrderResult:
        """A market order with an optional limit (immediate-or-cancel), idempotent on its client id."""
        self._call()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            existing = self.order(order.client_order_id)
            if existing is not None:
                self._db.execute("COMMIT")
                return existing
            result = self._match(order)
            self._record(order.client_order_id, result)
            if result.filled:
                signed = result.filled if order.side == BUY else -result.filled
                self._move_position(order.account, order.instrument, signed)
            self._db.execute("COMMIT")
            return result
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _match(self, order: Order) -> OrderResult:
        held = self.positions(order.account).get(order.instrument, 0.0)
        signed = order.quantity if order.side == BUY else -order.quantity
        reduces = reduces_position(held, signed)
        refusal = order_refusal(self.trading_state(order.instrument), order.instrument, reduces)
        if refusal is not None:
            return OrderResult(order.client_order_id, "rejected", 0.0, None, 0.0, None, refusal)
        if order.reduce_only and not reduces:
            return OrderResult(order.client_order_id, "rejected", 0.0, None, 0.0, None,
                               "reduce-only order would increase")
        book = self.book(order.instrument)
        sweep = book.sweep(order.side, order.quantity, order.limit_price)
        if not sweep.filled:
            return OrderResult(order.client_order_id, "rejected", 0.0, None, 0.0, None, "no liquidity within limit")
        status = "filled" if sweep.filled >= order.quantity - 1e-12 else "partially_filled"
        return OrderResult(order.client_order_id, status, sweep.filled, sweep.avg_price,
                           sweep.notional * self.config.taker_fee, sweep.slippage_against(book.anchor))

    def liquidate(self, client_order_id: str, account: str, instrument: str, quantity: float, mark: float,
                  equity_usd: float, now_ms: int, steps: str = "all", close_all: bool = True) -> WaterfallResult:
        """Close ``quantity`` (signed: the position being closed) through the waterfall; idempotent.

        ``steps``: ``all``; ``lp`` (skip the book: the transfer-to-LP action); ``fund`` (skip book
        and LPs)."""
        self._call()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT result FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
            if row is not None:
                self._db.execute("COMMIT")
                return _result_from_json(json.loads(row[0]))
            book = self.book(instrument, mark) if steps == "all" else OrderBook([], [])
            pool = LiquidityPool(self.config.lps if steps in ("all", "lp") else [])
            for lp_id, at_ms, usd in self._db.execute("SELECT lp_id, at_ms, usd FROM lp_usage"):
                provider = next((lp for lp in pool.providers if lp.lp_id == lp_id), None)
                if provider is not None:
                    pool.record(provider, at_ms, usd)
            balance, drawn = self._db.execute("SELECT balance, drawn FROM fund WHERE id = 1").fetchone()
            fund = InsuranceFund(balance, drawn)
            result = liquidate(account, instrument, quantity, mark, equity_usd, book, pool, fund,
                               self.config.adl_candidates.get(instrument, ()), now_ms, self.config.waterfall,
                               close_all)
            for fill in result.fills:
                if fill.step == "lp":
                    self._db.execute("INSERT INTO lp_usage VALUES (?, ?, ?)", (fill.counterparty, fill.event_time_ms,
                                                                               fill.quantity * mark))
            self._db.execute("UPDATE fund SET balance = ?, drawn = ? WHERE id = 1", (fund.balance_usd, fund.drawn_usd))
            closed = abs(quantity) - result.unfilled
            self._move_position(account, instrument, -closed if quantity > 0 else closed)
            self._db.execute("INSERT INTO orders VALUES (?, ?, ?)",
                             (client_order_id, json.dumps(_result_to_json(result)), time.time()))
            self._db.execute("COMMIT")
            return result
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _record(self, client_order_id: str, result: OrderResult) -> None:
        self._db.execute("INSERT INTO orders VALUES (?, ?, ?)",
                         (client_order_id, json.dumps(dataclasses.asdict(result)), time.time()))

    def _move_position(self, account: str, instrument: str, signed_quantity: float) -> None:
        self._db.execute(
            "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (account, instrument) "
            "DO UPDATE SET quantity = quantity + excluded.quantity", (account, instrument, signed_quantity))

    def seed_position(self, account: str, instrument: str, quantity: float) -> None:
        """Set an account's position (tests and demos start from a book of positions)."""
        self._db.execute("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)", (account, instrument, quantity))


def _result_to_json(result: WaterfallResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["fills"] = [dataclasses.asdict(f) for f in result.fills]
    return data


def _result_from_json(data: dict[str, Any]) -> WaterfallResult:
    return WaterfallResult(**{**data, "fills": tuple(Fill(**f) for f in data["fills"])})
