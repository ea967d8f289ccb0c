"""One shard's deterministic engine: decoded events in, breaches and signed actions out.

The engine holds the shard's market view and its accounts, and drives the pure stages in order:
detectors on every market and collateral event; revaluation of the accounts a change touched,
batched per ``revaluation_interval_ms`` of *event time* and vectorised through the risk core;
the margin detectors on each revaluation; the circuit breakers and the account ladder; signed
actions. Nothing here reads a clock or does I/O, so the same events in the same order give the
same breaches and actions, byte for byte — whether a stream worker's lane or the in-process replay feeds
them (both through a ``Sequencer``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.detect.breach import Breach, BreachKind
from pipelines.detect.detectors import DetectorParams, Detectors
from pipelines.engine.account_book import AccountBook, BuiltBook, asset_price
from pipelines.engine.account_book import instrument as instrument_of  # parsed once per name
from pipelines.engine.index_history import IndexHistory
from pipelines.engine.market_board import MarketBoard
from pipelines.policy.actions import Action, make_action
from pipelines.policy.circuit import CIRCUIT_ACTIONS, CircuitBreakers, CircuitChange, CircuitParams
from pipelines.policy.gaming import GamingParams, Penalties, delist
from pipelines.policy.ladder import (
    STATES,
    AccountState,
    AccountView,
    CloseIntent,
    Decision,
    Ladder,
    LadderParams,
    times_to_breach_ms,
)
from pipelines.policy.signing import SigningKey
from pipelines.risk import kernels
from pipelines.risk.adaptive import AdaptiveParams, MarketConditions
from pipelines.risk.book import Book, BookRisk, margin_ratio, revalue_book
from pipelines.risk.instruments import Kind, perpetual_of, underlying_of
from pipelines.risk.kernels import revalue as revalue_kernels
from pipelines.risk.kernels import triage
from pipelines.risk.kernels.planner import RoundCheck
from pipelines.risk.liquidation_order import LiquidationPlan, plan_liquidation, plan_liquidations, plan_rounds
from pipelines.risk.margin import MarginConfig


@dataclasses.dataclass(frozen=True)
class EngineParams:
    revaluation_interval_ms: int = 250
    detectors: DetectorParams = DetectorParams()
    circuit: CircuitParams = CircuitParams()
    ladder: LadderParams = LadderParams()
    gaming: GamingParams = GamingParams()
    margin: MarginConfig = MarginConfig()
    adaptive: AdaptiveParams | None = AdaptiveParams()
    hedged_accounts: frozenset[str] = frozenset()
    exposure_interval_ms: int = 5_000  # an account's snapshot at least this often while it is revalued
    exposure_ratio_step: float = 0.02  # ... and whenever its margin ratio moved this much since the last
    # the compiled (numba) kernels of the risk core; False runs their numpy reference (same results)
    compiled: bool = True


@dataclasses.dataclass(frozen=True)
class Revaluation:
    """A book revalued on the engine's current market: what one tick decides from."""

    book: Book
    risk: BookRisk
    conditions: MarketConditions


@dataclasses.dataclass
class EngineOutput:
    breaches: list[Breach] = dataclasses.field(default_factory=list)
    actions: list[Action] = dataclasses.field(default_factory=list)
    exposures: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def extend(self, other: EngineOutput) -> None:
        self.breaches += other.breaches
        self.actions += other.actions
        self.exposures += other.exposures


STATE_OF_CODE = {float(code): state.value for code, state in enumerate(STATES)}  # by ``Ladder.code`` code


@dataclasses.dataclass(eq=False)
class _Codes:
    """Per row of one ``BuiltBook``, what ``kernels.triage`` reads (its ``COLUMNS``): the
    ladder's codes (``Ladder.code``), the margin detectors' (``Detectors.margin_code``),
    whether the account is watched (in attention, or hedged) and hedged; and per row and
    underlying of the book, the hedges in flight (``Ladder.hedges_in_flight``) and the
    position in the perpetual (the book's, fixed). Resident between ticks and refreshed for
    the rows a tick visits (only a visit changes them), except the in-flight column, which
    also reads the market's ``unreliable`` set (``Ladder.closes_wait``): it holds for that set
    on every LIQUIDATED row (the only rows the triage reads it for), and ``follow`` reads
    those rows again when a tick's set differs. Rows of accounts out of attention hold
    NORMAL, no ladder and no margin condition: ``triage`` never leaves those alone.

    Besides, what the planner's round check reads (``kernels.planner.RoundCheck``,
    ``Ladder.round_code``), refreshed with the rows: per row the ladder's distress start and
    per position of the book the account's quantity in flight on its instrument (a row no
    refresh read since the book was built holds NaN and 0.0, one that left attention what its
    last refresh read: either way NORMAL in the table, never DUE_ROUND); and per instrument
    whether it waits on the last ``unreliable`` set ``waits`` was asked for."""

    built: BuiltBook
    table: np.ndarray  # float64, (accounts, len(triage.COLUMNS))
    hedges: np.ndarray  # float64, (accounts, underlyings)
    perpetuals: np.ndarray  # float64, (accounts, underlyings)
    distress: np.ndarray  # float64, (accounts,): Ladder.round_code's distress start, NaN: none
    in_flight: np.ndarray  # float64, (positions,): Ladder.round_code's in flight on the position's instrument
    waiting: np.ndarray  # bool, (instruments,): ``waits``' last
    ttb: np.ndarray  # float64, (accounts,): the time to breach the last triage found, on the rows it read
    unreliable: frozenset[str] = frozenset()  # what the in-flight column was read with
    waits_on: frozenset[str] = frozenset()  # what ``waiting`` was read with

    @classmethod
    def empty(cls, built: BuiltBook, hedged: Collection[str]) -> _Codes:
        table = np.zeros((len(built.book.accounts), len(triage.COLUMNS)))
        table[:, [triage.LAST_ROUND, triage.LAST_HEDGE, triage.MARGIN_DUE, triage.LIQUIDATION_DUE]] = math.nan
        table[:, [triage.MARGIN, triage.LIQUIDATION]] = -1
        table[:, triage.HEDGED] = table[:, triage.WATCHED] = built.mask(hedged)
        underlyings = built.book.instruments.underlyings
        perpetuals = np.zeros((len(built.book.accounts), len(underlyings)))
        column_of = {perpetual_of(u): k for k, u in enumerate(underlyings)}
        for i, legs in enumerate(built.closes):
            for name, _, qty in legs:
                if name in column_of:
                    perpetuals[i, column_of[name]] = -qty  # the position: a close negates it
        return cls(built, table, np.zeros_like(perpetuals), perpetuals, np.full(len(built.book.accounts), math.nan),
                   np.zeros(len(built.book.qty)), np.zeros(len(built.book.instruments.names), dtype=bool),
                   np.full(len(built.book.accounts), math.nan))

    def refresh(self, rows: np.ndarray, ladder: Ladder, detectors: Detectors, attention: Collection[str]) -> None:
        """Read ``rows`` again from the ladder, the detectors, the book's positions and the
        accounts in ``attention`` (the in-flight column with ``unreliable``)."""
        if not rows.size:
            return
        accounts, closes, hedged = self.built.book.accounts, self.built.closes, self.table[rows, triage.HEDGED]
        unreliable = self.unreliable
        self.table[rows] = [
            (*ladder.code(accounts[i], closes[i], unreliable),
             *detectors.margin_code(accounts[i]), accounts[i] in attention or h, h)
            for i, h in zip(rows.tolist(), hedged.tolist())]
        underlyings = self.built.book.instruments.underlyings
        self.hedges[rows] = [ladder.hedges_in_flight(accounts[i], underlyings) for i in rows.tolist()]
        start = self.built.book.position_start
        for i in rows.tolist():
            self.distress[i], self.in_flight[start[i]:start[i + 1]] = ladder.round_code(
                accounts[i], [name for name, _, _ in closes[i]])

    def waits(self, unreliable: frozenset[str]) -> np.ndarray:
        """Per instrument of the book, whether its liquidations wait on ``unreliable``: its
        underlying or itself named (``ladder._round_orders``); read again only when the set
        differs from the last one asked for."""
        if unreliable != self.waits_on:
            self.waits_on = unreliable
            self.waiting = np.array([name in unreliable or underlying_of(name) in unreliable
                                     for name in self.built.book.instruments.names], dtype=bool)
        return self.waiting

    def follow(self, unreliable: frozenset[str], ladder: Ladder) -> None:
        """Hold the in-flight column for ``unreliable``: where it differs from the set the column
        was read with, every LIQUIDATED row's is read again (``Ladder.closes_wait``)."""
        if unreliable == self.unreliable:
            return
        self.unreliable = unreliable
        rows = np.flatnonzero(self.table[:, triage.STATE] == triage.LIQUIDATED)
        if rows.size:
            accounts, closes = self.built.book.accounts, self.built.closes
            self.table[rows, triage.IN_FLIGHT] = [ladder.closes_wait(accounts[i], closes[i], unreliable)
                                                  for i in rows.tolist()]


def _marks(book: Book, risk: BookRisk) -> dict[str, float]:
    """The revaluation's mark per instrument of ``book``, by name."""
    return dict(zip(book.instruments.names, risk.marks.tolist()))


def _triage_limits(params: EngineParams) -> np.ndarray:
    """The thresholds ``kernels.triage`` reads (its ``LIMITS``), from the ladder's and the
    detectors' parameters; ``quiet_below``: under every ratio either acts at."""
    p, d = params.ladder, params.detectors
    limits = {"quiet_below": min(p.call_ratio, p.reduce_ratio, d.margin_trigger_ratio, d.liquidation_ratio),
              "horizon_ms": p.horizon_ms, "call_ratio": p.call_ratio, "reduce_ratio": p.reduce_ratio,
              "release_ratio": p.release_ratio, "round_ms": p.round_ms, "buffer_factor": 1.0 + p.buffer,
              "margin_trigger_ratio": d.margin_trigger_ratio, "margin_clear_ratio": d.margin_clear_ratio,
              "liquidation_ratio": d.liquidation_ratio, "hedge_threshold_usd": p.hedge_threshold_usd}
    return np.array([limits[name] for name in triage.LIMITS], dtype=np.float64)


class Engine:
    def __init__(self, key: SigningKey, params: EngineParams | None = None,
                 reports: Callable[[str], bool] | None = None) -> None:
        """``reports``: which market subjects this engine reports (``shards.MarketOwner``, for one
        shard of a cluster); the detectors of the others, whose breaches another shard reports
        and nothing here reads, are skipped. None: every subject (a single engine)."""
        self.key = key
        self.params = params or EngineParams()
        if self.params.compiled:
            kernels.warm()  # never on the first event
        self._reports = reports
        self._limits = _triage_limits(self.params)
        self.board = MarketBoard()
        self.detectors = Detectors(self.params.detectors)
        self.circuits = CircuitBreakers(self.params.circuit)
        self.ladder = Ladder(self.params.ladder)
        self.penalties = Penalties(self.params.gaming)
        self.accounts = AccountBook()
        self._touched: dict[str, int] = {}  # account -> sequence number of its first update this tick
        self._moved: dict[str, int] = {}  # underlying -> sequence number of its first move this tick
        self._refs: list[str] = []  # this tick's event refs, by sequence number
        self._attention: set[str] = set()  # accounts the ladder or the margin detectors are watching
        # account -> (time, ratio) of its last exposure; for the rows of _emitted_cache, as of its last fold
        self._emitted: dict[str, tuple[int, float]] = {}
        self._emitted_cache: tuple[BuiltBook, np.ndarray, np.ndarray] | None = None  # _emitted_rows
        self._codes_cache: _Codes | None = None  # _codes
        self._thin: set[str] = set()  # instruments in an active liquidity breach
        self._index_history: dict[str, IndexHistory] = defaultdict(IndexHistory)
        self._tick_end: int | None = None
        self._last_time_ms: int | None = None
        self.events = 0

    # ------------------------------------------------------------------ input

    def on_event(self, record: str, value: Mapping[str, Any], ref: str) -> EngineOutput:
        """Apply one decoded, validated record (in sequencer order)."""
        return self.on_events(((record, value, ref),))

    def on_events(self, batch: Iterable[tuple[str, Mapping[str, Any], str]]) -> EngineOutput:
        """Apply a run of decoded, validated ``(record, value, ref)`` in sequencer order: the
        outputs, in order, of ``on_event`` on each in turn. A record at or past the pending
        tick's end revalues that tick first; inside a tick, each run of records of one kind is
        applied in one pass (``_apply_run``)."""
        out = EngineOutput()
        interval = self.params.revaluation_interval_ms
        tick_end = self._tick_end
        kind = ""
        values: list[Mapping[str, Any]] = []  # the run of records of ``kind`` not applied yet,
        refs: list[str] = []  # and their refs (both emptied in place once applied)
        add_value, add_ref = values.append, refs.append
        for record, value, ref in batch:
            t = value["event_time_ms"]
            if tick_end is None or t >= tick_end:
                if values:
                    self._apply_run(kind, values, refs, out)
                    values.clear()
                    refs.clear()
                if tick_end is not None:
                    out.extend(self._revalue(tick_end - 1))
                tick_end = self._tick_end = (t // interval + 1) * interval
                kind = record
            elif record != kind:
                if values:
                    self._apply_run(kind, values, refs, out)
                    values.clear()
                    refs.clear()
                kind = record
            add_value(value)
            add_ref(ref)
        if values:
            self._apply_run(kind, values, refs, out)
        return out

    def _apply_run(self, record: str, values: list[Mapping[str, Any]], refs: list[str], out: EngineOutput) -> None:
        """Records of one kind, in order, inside one tick, as one by one: index and mark prices
        update the board in one pass (nothing in such a run reads what it changes), the others
        one at a time. Neither list is kept (``on_events`` empties them for the next run)."""
        if record == "IndexPrice":
            self._on_indexes(values, refs, out)
        elif record == "MarkPrice":
            self._on_marks(values, refs, out)
        elif record in ("PositionUpdate", "CollateralUpdate"):
            for value, ref in zip(values, refs):
                self._count(value["event_time_ms"])
                self._on_account(record, value, ref, out)
        else:
            for value, ref in zip(values, refs):
                self._count(value["event_time_ms"])
                self._on_market(record, value, ref, out)

    def _count(self, t: int, n: int = 1) -> None:
        """``n`` more records applied, the newest at event time ``t``."""
        if self._last_time_ms is None or t > self._last_time_ms:
            self._last_time_ms = t
        self.events += n

    def unpriced(self) -> dict[str, int]:
        """Per underlying without an index price yet, how many of the engine's accounts hold it:
        accounts nothing can revalue, so no breach or action can come for them — what an
        operator must hear about when it lasts (a feed missing, or market data not arriving).

        The worker asks every few seconds, on its event loop: when the built book (the one the
        next tick revalues) holds every account, that is the answer without a pass over them."""
        book = self.accounts
        built = book.built(self.board.index.keys(), self.board.instruments)
        if len(built.where) == len(book.positions.keys() | book.collateral.keys()):
            return {}
        out: dict[str, int] = {}
        for positions in book.positions.values():
            for underlying in {underlying_of(name) for name in positions} - self.board.index.keys():
                out[underlying] = out.get(underlying, 0) + 1
        return dict(sorted(out.items()))

    def flush(self) -> EngineOutput:
        """Revalue what is still dirty (end of a replay, or an idle live stream)."""
        if self._last_time_ms is None:
            return EngineOutput()
        return self._revalue(self._last_time_ms)

    def _seq(self, ref: str) -> int:
        self._refs.append(ref)
        return len(self._refs) - 1

    def _on_account(self, record: str, value: Mapping[str, Any], ref: str, out: EngineOutput) -> None:
        account = value["account"]
        if record == "PositionUpdate":
            self.accounts.set_position(account, value["instrument"], value["quantity"], value["average_price"])
            self.ladder.on_position_update(account, value["instrument"])
        else:
            self.accounts.set_collateral(account, value["asset"], value["amount"])
            change_usd = value["change"] * asset_price(value["asset"], self.board.index)
            breaches = self.detectors.on_collateral(account, value["event_time_ms"], change_usd,
                                                    self.accounts.collateral_usd(account, self.board.index), ref)
            out.breaches += breaches
        if account not in self._touched:
            self._touched[account] = self._seq(ref)

    def _on_market(self, record: str, value: Mapping[str, Any], ref: str, out: EngineOutput) -> None:
        """Apply a market record other than an index or a mark price (``_on_indexes``,
        ``_on_marks``); its breaches and circuit actions go to ``out``."""
        t = value["event_time_ms"]
        moved = self.board.apply(record, value)
        d = self.detectors
        breaches: list[Breach] = []
        if record == "VolatilityUpdate" and value.get("iv") is not None:
            subject = value.get("instrument") or value["underlying"]
            if self._reported(subject):
                breaches = d.on_iv(subject, t, value["iv"], ref)
        elif record == "OrderBookDepth":
            breaches = d.on_depth(value["instrument"], t, self.board.depth_usd[value["instrument"]], ref)
        elif record == "OraclePrice":
            breaches = d.on_oracle(value["underlying"], value["source"], t, value["publish_time_ms"],
                                   value["price"], ref)
        if breaches:
            out.breaches += breaches
            self._act_on(breaches, out)
        if moved is not None:
            self._moved_by(moved, t, ref, out)

    def _on_indexes(self, values: list[Mapping[str, Any]], refs: list[str], out: EngineOutput) -> None:
        """A run of ``IndexPrice`` records inside one tick, as ``_on_market`` would apply them one
        by one: the board takes the whole run in one pass, then each price goes to its
        underlying's history, its detector and its circuit."""
        moved = self.board.apply_indexes(values)
        histories, on_index = self._index_history, self.detectors.on_index
        newest = values[0]["event_time_ms"]
        for value, ref, underlying in zip(values, refs, moved):
            t, price, subject = value["event_time_ms"], value["price"], value["underlying"]
            if t > newest:
                newest = t
            histories[subject].append(t, price)
            breaches = on_index(subject, t, price, ref)
            if breaches:
                out.breaches += breaches
                self._act_on(breaches, out)
            if underlying is not None:
                self._moved_by(underlying, t, ref, out)
        self._count(newest, len(values))

    def _moved_by(self, underlying: str, t: int, ref: str, out: EngineOutput) -> None:
        """A record at ``t`` moved ``underlying``: its circuit advances to ``t`` (``out`` takes
        the change's action), and the tick remembers the first record that moved it."""
        for change in self.circuits.on_time(underlying, t):
            out.actions.append(self._circuit_action(change))
        if underlying not in self._moved:
            self._moved[underlying] = self._seq(ref)

    def _on_marks(self, values: list[Mapping[str, Any]], refs: list[str], out: EngineOutput) -> None:
        """A run of ``MarkPrice`` records inside one tick, as ``_on_market`` would apply them one by
        one: the board takes the whole run in one pass (nothing in the run reads a mark), then
        each record goes through its detector and its underlying's circuit."""
        moved = self.board.apply_marks(values)
        index = self.board.index
        # _moved_by changes nothing when asked again at once: the underlying and time it was last asked
        timed_underlying: str | None = None
        timed_ms = newest = values[0]["event_time_ms"]
        for value, ref, underlying in zip(values, refs, moved):
            t = value["event_time_ms"]
            if t > newest:
                newest = t
            instrument = value["instrument"]
            # A linear contract's mark is compared with its index; an option's mark is a premium,
            # which no index bounds, so it is not (its model value would be the reference).
            if instrument_of(instrument).kind is not Kind.OPTION:
                reference = value.get("index_price") or index.get(value["underlying"])
                if reference and self._judge_mark(value, ref, reference, out):
                    timed_underlying = None
            if underlying is not None and (underlying != timed_underlying or t != timed_ms):
                timed_underlying, timed_ms = underlying, t
                self._moved_by(underlying, t, ref, out)
        self._count(newest, len(values))

    def _judge_mark(self, value: Mapping[str, Any], ref: str, reference: float, out: EngineOutput) -> bool:
        """A linear contract's mark through its detector, against its index ``reference``; its
        breaches (and their delistings and circuit actions) into ``out`` where this engine reports
        the instrument. Whether it reported any."""
        # Venue-wide open interest and its largest holder's share, both published market
        # data (docs/risk-model.md §7): every shard runs the detector alike (its accounts'
        # ladders wait while the mark is manipulated); only the shard that reports the
        # instrument emits its breaches and actions.
        instrument = value["instrument"]
        interest = value.get("open_interest")
        backing = math.inf if interest is None else abs(interest) * value["mark_price"]
        breaches = self.detectors.on_mark(instrument, value["event_time_ms"], value["mark_price"], reference, backing,
                                          self.board.depth_usd.get(instrument), ref, value.get("largest_holder_share"))
        reported = self._reported(instrument)
        for breach in breaches:
            self._delist(breach, out if reported else None)
        if breaches and reported:
            out.breaches += breaches
            self._act_on(breaches, out)
            return True
        return False

    def _act_on(self, breaches: list[Breach], out: EngineOutput) -> None:
        """Market breaches just found: liquidity breaches mark their instrument thin (or clear it),
        and index moves drive the circuits, whose changes become actions (a mark manipulation's
        delisting is ``_delist``'s)."""
        for breach in breaches:
            if breach.kind is BreachKind.LIQUIDITY_DROP:
                (self._thin.discard if breach.cleared else self._thin.add)(breach.subject)
            for change in self.circuits.on_breach(breach):
                out.actions.append(self._circuit_action(change))

    def _delist(self, breach: Breach, out: EngineOutput | None) -> None:
        """A mark manipulation just fired: its instrument is delisted and settled at the price
        before it (one ``delist_settle`` into ``out``; None: another shard reports it); after a
        pump (level 1) the instrument is judged no more (``Detectors.delist``)."""
        if breach.kind is not BreachKind.MARK_MANIPULATION or breach.cleared:
            return
        if out is not None:
            settle = self.detectors.manipulated()[breach.subject]
            out.actions.append(self._sign(delist(breach, underlying_of(breach.subject), settle)))
        self.detectors.delist(breach.subject)

    def _reported(self, subject: str) -> bool:
        return self._reports is None or self._reports(subject)

    # ------------------------------------------------------------------ revaluation

    def _revalue(self, time_ms: int) -> EngineOutput:
        """Revalue every account the tick touched, all at once; only accounts the ladder or the
        detectors could act on go through the per-account Python (``_triage``)."""
        out = EngineOutput()
        if not self._touched and not self._moved:
            return out
        built = self.accounts.built(self.board.index.keys(), self.board.instruments)
        touched, moved, refs = self._touched, self._moved, self._refs
        rows = built.touched_rows(touched, moved)
        # accounts that cannot be priced yet stay touched until their underlyings have an index
        waiting = [(a, refs[s]) for a, s in touched.items() if a not in built.where]
        self._touched, self._moved, self._refs = {}, {}, []
        for account, ref in waiting:
            self._touched[account] = self._seq(ref)
        if not rows.size:
            return out
        revalued = self._revaluation(built, time_ms, rows)
        risk = revalued.risk
        speeds = [self._velocity(u, time_ms) for u in risk.underlyings]
        velocity = dict(zip(risk.underlyings, speeds))
        unreliable = self.detectors.unreliable(built.book.instruments.underlyings)
        fate = self._triage(built, rows, risk, speeds, unreliable, time_ms)
        slow = fate != triage.QUIET  # a due round resolves to VISIT or ROUND, never to QUIET
        plans: dict[int, LiquidationPlan] = {}
        # a few dozen rows a tick: one tolist and Python lists cost less than numpy's masks
        fates, row_list = fate.tolist(), rows.tolist()
        due_at = [k for k, f in enumerate(fates) if f == triage.DUE_ROUND] if triage.DUE_ROUND in fates else []
        if due_at or triage.VISIT in fates:
            due = fate == triage.DUE_ROUND
            planned = due | (fate == triage.VISIT)
            plans, sends = self._plans(built, revalued, rows[planned], due[planned], unreliable, time_ms)
            for k, send in zip(due_at, sends):
                fates[k] = triage.VISIT if send else triage.ROUND
        self._leave_alone(built, row_list, fates, time_ms)
        if triage.VISIT in fates:
            visit = [k for k, f in enumerate(fates) if f == triage.VISIT]
            marks = _marks(revalued.book, risk)
            first = [refs[built.first_touch(row_list[k], touched, moved)] for k in visit]
            visited = rows[visit]
            self._visit(built, revalued, visited, self._codes(built).ttb[visited], velocity, first, unreliable, plans,
                        marks, time_ms, out)
        out.exposures += self._exposures(built, rows, slow, risk, time_ms)
        return out

    def _rounds_send(self, accounts: tuple[str, ...], rows: np.ndarray, risk: BookRisk,
                     plans: Mapping[int, LiquidationPlan], marks: Mapping[str, float], unreliable: frozenset[str],
                     time_ms: int) -> np.ndarray:
        """Per row of ``rows`` (``DUE_ROUND``: a liquidating account's round due, margin unmoved),
        whether its round may send anything, so that only the rows it is False for are left to
        ``_leave_alone``: ``Ladder.round_orders`` on the orders of the plan made at this tick, as
        the visit's plan closure would give them. False where the target is not finite (the
        closure makes no plan then, and neither did ``_plans``); True where the target is finite
        and the tick made no plan for the row: the visit plans it alone, so a missing plan can
        cost time, never an action."""
        thin, round_orders, target_of = self._thin, self.ladder.round_orders, self.ladder.target_ratio_of
        sends = np.zeros(len(rows), dtype=bool)
        for k, i in enumerate(rows.tolist()):
            plan = plans.get(i)
            if plan is None:
                sends[k] = math.isfinite(target_of(float(risk.maintenance[i]), float(risk.initial[i])))
            elif plan.orders:
                legs = [(o.instrument, underlying_of(o.instrument), o.qty, marks[o.instrument]) for o in plan.orders]
                sends[k] = bool(round_orders(accounts[i], legs, time_ms, thin, unreliable))
        return sends

    def _leave_alone(self, built: BuiltBook, rows: list[int], fates: list[int], time_ms: int) -> None:
        """What the per-account path would have done for the rows it leaves out (``fates``, per
        row, a due round resolved to ROUND or VISIT): UNMOVED, the margin watermark moves, as
        ``on_margin`` would move it; ROUND (a liquidated account's round, each leg in flight or
        waiting on an unreliable market, or a liquidating account's round that sends nothing),
        the round is marked too."""
        accounts = built.book.accounts
        idle = [accounts[i] for i, f in zip(rows, fates) if f >= triage.UNMOVED]
        if idle:
            rounds = [i for i, f in zip(rows, fates) if f == triage.ROUND]
            self.detectors.advance_margin(idle, time_ms)
            if rounds:
                self.ladder.mark_rounds([accounts[i] for i in rounds], time_ms)
                last_round = self._codes(built).table[:, triage.LAST_ROUND]
                for i in rounds:  # a few rows: scalar writes cost less than a fancy index
                    last_round[i] = time_ms

    def _visit(self, built: BuiltBook, revalued: Revaluation, rows: np.ndarray, ttb: np.ndarray,
               velocity: Mapping[str, float], refs: list[str], unreliable: frozenset[str],
               plans: Mapping[int, LiquidationPlan], marks: Mapping[str, float], time_ms: int,
               out: EngineOutput) -> None:
        """The per-account path for ``rows`` (each with its time to breach and the ref of the
        tick's first event that touched it; ``unreliable``: the tick's, ``Detectors.unreliable``; the
        tick's ``plans``, ``_plans``, and ``marks`` by instrument): margin detectors, penalties
        and the ladder, whose decisions are signed into ``out``; the rows' codes are refreshed
        after."""
        book, risk, conditions = revalued.book, revalued.risk, revalued.conditions
        thin = set(self._thin)
        trading = {u: self.circuits.trading_state(u) for u in book.instruments.underlyings}
        for (i, view), ref in zip(self._views(book.accounts, rows, risk, velocity, ttb, time_ms), refs):
            account = view.account
            breaches = self.detectors.on_margin(account, time_ms, view.margin_ratio, ref)
            out.breaches += breaches
            legs = [CloseIntent(name, underlying, q, marks[name]) for name, underlying, q in built.closes[i]]

            def plan(target: float, i: int = i) -> list[CloseIntent]:
                if not math.isfinite(target):
                    return []  # margin that cannot be valued sizes no partial close (_plans)
                result = plans.get(i)
                if result is None or result.target_ratio != target:
                    result = plan_liquidation(book, risk, i, target, adaptive=self.params.adaptive,
                                              conditions=conditions, compiled=self.params.compiled)
                return [CloseIntent(o.instrument, underlying_of(o.instrument), o.qty, marks[o.instrument])
                        for o in result.orders]

            decisions = self.penalties.on_breaches(account, breaches)
            decisions += self.ladder.on_revaluation(view, breaches, legs, plan, thin, unreliable, trading)
            out.actions += [self._sign(d) for d in decisions]
            if self.ladder.state(account) is not AccountState.NORMAL or not self.detectors.margin_idle(account):
                self._attention.add(account)
            else:
                self._attention.discard(account)
        self._codes(built).refresh(rows, self.ladder, self.detectors, self._attention)

    def revaluation(self, time_ms: int | None = None) -> Revaluation:
        """Every priced account revalued as of ``time_ms`` (default: the latest event time) on
        the current market, as a tick would, changing nothing: for what-ifs and benchmarks. Its
        book's collateral and its conditions' dicts are the caller's own (the ticks reuse theirs while
        prices and conditions hold)."""
        as_of_ms = self._last_time_ms if time_ms is None else time_ms
        if as_of_ms is None:
            raise ValueError("no event yet: nothing to revalue")
        built = self.accounts.built(self.board.index.keys(), self.board.instruments)
        revalued = self._revaluation(built, as_of_ms, resident=False)
        conditions = revalued.conditions  # the board's, reused by later ticks: the caller gets copies
        return dataclasses.replace(revalued, book=revalued.book.with_collateral(revalued.book.collateral.copy()),
                                   conditions=MarketConditions(dict(conditions.realised_vol),
                                                               dict(conditions.depth_usd)))

    def _revaluation(self, built: BuiltBook, time_ms: int, rows: np.ndarray | None = None, *,
                     resident: bool = True) -> Revaluation:
        """``rows``: revalue only these accounts (the others' risk entries are NaN); None: all.
        ``resident``: the risk's arrays are the built book's (``BuiltBook.resident``), rewritten by
        its next resident revaluation: a tick's, valid for that tick only; False: the caller's own."""
        book = built.with_collateral(self.board.index)
        market = self.board.market_state(time_ms, book.instruments.underlyings)
        conditions = self.board.conditions(self._realised_vols(), book.instruments.underlyings)
        risk = revalue_book(book, market, self.params.margin, self.params.adaptive, conditions,
                            compiled=self.params.compiled, accounts=rows, resident=built.resident if resident else None)
        self._raise_add_ons(built, risk, rows)
        return Revaluation(book, risk, conditions)

    def _raise_add_ons(self, built: BuiltBook, risk: BookRisk, rows: np.ndarray | None) -> None:
        """Penalised accounts' margin × (1 + add-on) (``policy.gaming``), in place, on the rows
        revalued (None: all): maintenance, initial and the margin ratio from them. Compiled: row by
        row, the same products and ``margin_ratio``'s scalar kernel (a penalised account or two a
        tick; numpy's calls cost more than the arithmetic)."""
        add_ons = self.penalties.add_ons()
        if not add_ons:
            return
        picked = [(built.where[a], add_on) for a, add_on in sorted(add_ons.items()) if a in built.where]
        if rows is not None:
            revalued = set(rows.tolist())
            picked = [(i, add_on) for i, add_on in picked if i in revalued]
        if not picked:
            return
        if self.params.compiled:
            maintenance, initial, equity, ratio = risk.maintenance, risk.initial, risk.equity, risk.margin_ratio
            for i, add_on in picked:
                scale = 1.0 + add_on
                maintenance[i] *= scale
                initial[i] *= scale
                ratio[i] = revalue_kernels.margin_ratio_of(maintenance[i], equity[i])
            return
        where = np.array([i for i, _ in picked], dtype=np.int64)
        factor = 1.0 + np.array([add_on for _, add_on in picked])
        risk.maintenance[where] *= factor
        risk.initial[where] *= factor
        risk.margin_ratio[where] = margin_ratio(risk.maintenance[where], risk.equity[where])

    def _plans(self, built: BuiltBook, revalued: Revaluation, rows: np.ndarray, due: np.ndarray,
               unreliable: frozenset[str], time_ms: int) -> tuple[dict[int, LiquidationPlan], list[bool]]:
        """The liquidation plans this revaluation's ladder will ask for, or probably will, made
        together (``plan_liquidations``: one at a time they were most of the engine's time in a
        crash): for the ``rows`` whose round is ``due`` (DUE_ROUND: the ladder asks for it), and
        for the others where ``Ladder.may_round``; none where the target is not finite (an
        account whose margin cannot be valued, NaN: ``margin_ratio`` counts it infinitely over,
        has no target to size a partial close to; its equity breach closes it in full). And per
        due row, in order, whether its round sends anything (``_rounds_send``): compiled, the
        kernel checks the rounds as it plans them (``liquidation_order.plan_rounds``) and the
        plans of the rounds that send nothing, which no visit reads, are left out."""
        book, risk, adaptive, conditions = revalued.book, revalued.risk, self.params.adaptive, revalued.conditions
        wanted, targets, checked = self._wanted(book.accounts, risk, rows, due, time_ms)
        if not self.params.compiled:
            plans = dict(zip(wanted, plan_liquidations(book, risk, wanted, targets, adaptive=adaptive,
                                                       conditions=conditions, compiled=False) if wanted else []))
            marks = _marks(book, risk)
            return plans, self._rounds_send(book.accounts, rows[due], risk, plans, marks, unreliable, time_ms).tolist()
        if not wanted:
            return {}, [False] * int(due.sum())
        codes, p = self._codes(built), self.params.ladder
        check = RoundCheck(checked, codes.distress, codes.in_flight, codes.waits(unreliable), risk.marks, time_ms,
                           p.initial_share, p.ramp_ms, p.round_notional_usd, p.min_notional_usd)
        made, sent = plan_rounds(book, risk, wanted, targets, check, adaptive, conditions)
        plans = {i: plan for i, plan in zip(wanted, made) if plan is not None}
        sends = {i: send for i, send, is_due in zip(wanted, sent, checked) if is_due}
        return plans, [sends.get(i, False) for i in rows[due].tolist()]

    def _wanted(self, accounts: tuple[str, ...], risk: BookRisk, rows: np.ndarray, due: np.ndarray,
                time_ms: int) -> tuple[list[int], list[float], list[bool]]:
        """The rows ``_plans`` plans (due, or ``Ladder.may_round``, with a finite target), their
        targets and whether each is due."""
        shortfall = self.params.detectors.margin_trigger_ratio
        may_round, target_of = self.ladder.may_round, self.ladder.target_ratio_of
        wanted, targets, checked = [], [], []
        # a few rows a tick: per-row floats (target_ratio_of) cost less than the vectorised target_ratios
        for i, is_due, ratio, maintenance, initial in zip(rows.tolist(), due.tolist(), risk.margin_ratio[rows].tolist(),
                                                          risk.maintenance[rows].tolist(), risk.initial[rows].tolist()):
            target = target_of(maintenance, initial)
            if math.isfinite(target) and (is_due or may_round(accounts[i], ratio, time_ms, shortfall)):
                wanted.append(i)
                targets.append(target)
                checked.append(is_due)
        return wanted, targets, checked

    @staticmethod
    def _times_to_breach(risk: BookRisk, speeds: Sequence[float], rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows``, its projected time to breach at the index velocity ``speeds`` (one
        per underlying of ``risk``, in its order): the numpy reference of the triage kernel's."""
        a = b = np.zeros(len(rows))
        for k, speed in enumerate(speeds):
            a = a + 0.5 * risk.gamma[rows, k] * speed * speed
            b = b + risk.delta[rows, k] * speed
        return times_to_breach_ms(risk.equity[rows] - risk.maintenance[rows], a, b)

    def _triage(self, built: BuiltBook, rows: np.ndarray, risk: BookRisk, speeds: Sequence[float],
                unreliable: frozenset[str], time_ms: int) -> np.ndarray:
        """Each of ``rows``' fate (``kernels.triage``: QUIET, VISIT, UNMOVED, ROUND or DUE_ROUND)
        from the resident codes, their in-flight column following ``unreliable`` first
        (``_Codes.follow``), at the index velocity ``speeds`` (per underlying of ``risk``); their
        times to breach are left in the codes' ``ttb``. Changes nothing else: ``_revalue``
        resolves the DUE_ROUND rows with the tick's plans, and ``_leave_alone`` does for the rows
        left out what their visit would have done."""
        codes = self._codes(built)
        codes.follow(unreliable, self.ladder)
        underlying = np.array([[self.board.index[u] for u in risk.underlyings],
                               [self.circuits.allows_risk_increase(u) for u in risk.underlyings], speeds],
                              dtype=np.float64)
        return self._fates(codes, rows, risk, underlying, time_ms)

    def _fates(self, resident: _Codes, rows: np.ndarray, risk: BookRisk, underlying: np.ndarray,
               time_ms: int) -> np.ndarray:
        """``kernels.triage.triage_rows``, or its numpy reference: the times to breach
        (``_times_to_breach``, written to ``resident.ttb`` at ``rows``), the screen
        (``_screen``), then for the rows it keeps, margin detectors unmoved
        (``Detectors.margin_unmoved``), not hedged or the hedge waiting (``Ladder.hedge_waits``),
        and the ladder unmoved (``Ladder.unmoved``), only marking a round (``Ladder.round_only``)
        or running a liquidating round (``Ladder.round_due``). ``underlying``: per underlying,
        its index, whether its trading state lets risk increase and its index velocity."""
        if self.params.compiled:
            return triage.triage_rows(rows, risk.margin_ratio, risk.equity, risk.maintenance, risk.initial, risk.delta,
                                      risk.gamma, resident.table, resident.hedges, resident.perpetuals, underlying,
                                      self._limits, float(time_ms), resident.ttb)
        ttb = resident.ttb[rows] = self._times_to_breach(risk, underlying[2].tolist(), rows)
        codes, ratio = resident.table[rows], risk.margin_ratio[rows]
        slow = self._screen(ratio, ttb, codes[:, triage.WATCHED] != 0)
        quiet = self.detectors.margin_unmoved(codes[:, triage.MARGIN], codes[:, triage.MARGIN_DUE],
                                              codes[:, triage.LIQUIDATION], codes[:, triage.LIQUIDATION_DUE],
                                              ratio, time_ms)
        state, last_round = codes[:, triage.STATE], codes[:, triage.LAST_ROUND]
        quiet &= (codes[:, triage.HEDGED] == 0) | self.ladder.hedge_waits(
            state, codes[:, triage.LAST_HEDGE], risk.delta[rows], resident.hedges[rows], resident.perpetuals[rows],
            underlying[1] != 0, underlying[0], time_ms)
        unmoved = quiet & self.ladder.unmoved(state, last_round, codes[:, triage.HELD], ratio, ttb,
                                              risk.maintenance[rows], risk.initial[rows], time_ms)
        rounds = quiet & self.ladder.round_only(state, last_round, ratio, codes[:, triage.IN_FLIGHT] != 0, time_ms)
        due = quiet & self.ladder.round_due(state, last_round, ratio, risk.maintenance[rows], risk.initial[rows],
                                            time_ms)
        fate = np.where(slow, triage.VISIT, triage.QUIET).astype(np.int8)
        fate[slow & unmoved] = triage.UNMOVED
        fate[slow & rounds] = triage.ROUND
        fate[slow & due] = triage.DUE_ROUND
        return fate

    def _screen(self, ratio: np.ndarray, ttb: np.ndarray, watched: np.ndarray) -> np.ndarray:
        """Which revalued accounts need more than a glance (the numpy reference of the triage's
        first test). The others are provably idle: the ladder is NORMAL, no margin condition is
        pending or firing, the account is not hedged, and its ratio and projected time to
        breach are clear of every threshold — for them the detectors and the ladder would
        return nothing and change nothing."""
        limits = self._limits
        return ~((ratio < limits[triage.QUIET_BELOW]) & (ttb >= limits[triage.HORIZON_MS])) | watched

    def _codes(self, built: BuiltBook) -> _Codes:
        """The triage's codes over the rows of ``built`` (``_Codes``), made again from the
        accounts in attention when the book is rebuilt."""
        codes = self._codes_cache
        if codes is None or codes.built is not built:
            codes = self._codes_cache = _Codes.empty(built, self.params.hedged_accounts)
            where = built.where
            codes.refresh(np.array(sorted(where[a] for a in self._attention if a in where), dtype=np.int64),
                          self.ladder, self.detectors, self._attention)
        return codes

    def _views(self, accounts: tuple[str, ...], rows: np.ndarray, risk, velocity: Mapping[str, float],
               ttb: np.ndarray, time_ms: int) -> list[tuple[int, AccountView]]:
        """The ladder's view of each account in ``rows`` (with its row): read out of the risk
        arrays once per tick (``tolist``), not element by element; the index and velocity
        dicts are the tick's own, shared (nothing changes a view)."""
        unds = risk.underlyings
        index = {u: self.board.index[u] for u in unds}
        velocity = dict(velocity)
        hedged = self.params.hedged_accounts
        columns = (risk.equity[rows].tolist(), risk.maintenance[rows].tolist(), risk.initial[rows].tolist(),
                   risk.margin_ratio[rows].tolist(), risk.delta[rows].tolist(), risk.gamma[rows].tolist(),
                   risk.vega[rows].tolist(), ttb.tolist())
        return [(i, AccountView(
            account=accounts[i], event_time_ms=time_ms, equity=equity, maintenance=maintenance, initial=initial,
            margin_ratio=ratio, delta=dict(zip(unds, delta)), gamma=dict(zip(unds, gamma)),
            vega=dict(zip(unds, vega)), index=index, index_velocity=velocity, hedged=accounts[i] in hedged,
            time_to_breach_ms=breach_ms))
            for i, equity, maintenance, initial, ratio, delta, gamma, vega, breach_ms in zip(rows.tolist(), *columns)]

    def _exposures(self, built: BuiltBook, rows: np.ndarray, slow: np.ndarray, risk,
                   time_ms: int) -> list[dict[str, Any]]:
        """Exposure snapshots, throttled: every account the ladder or detectors looked at, and
        any other whose ratio moved by ``exposure_ratio_step`` or whose last snapshot is older
        than ``exposure_interval_ms`` — a compacted topic wants the news, not every tick."""
        p = self.params
        last_t, last_ratio = self._emitted_rows(built)
        codes = self._codes(built).table  # the ladder's states the tick's visits refreshed (``_codes``)
        if p.compiled:
            picked, values = revalue_kernels.exposures_picked(
                rows, slow, risk.margin_ratio, risk.equity, risk.maintenance, risk.initial, codes, triage.STATE,
                last_t, last_ratio, float(time_ms), float(p.exposure_interval_ms), float(p.exposure_ratio_step))
        else:
            ratio = risk.margin_ratio[rows]
            with np.errstate(invalid="ignore"):
                due = (slow | (time_ms - last_t[rows] >= p.exposure_interval_ms)
                       | ~(np.abs(ratio - last_ratio[rows]) < p.exposure_ratio_step))
            picked = rows[due]
            values = np.column_stack((risk.equity[picked], risk.maintenance[picked], risk.initial[picked],
                                      risk.margin_ratio[picked], codes[picked, triage.STATE]))
            last_t[picked], last_ratio[picked] = time_ms, risk.margin_ratio[picked]
        accounts = built.book.accounts
        # by column: five lists, not one per record
        return [{"account": accounts[i], "event_time_ms": time_ms, "equity_usd": equity,
                 "maintenance_margin_usd": maintenance, "initial_margin_usd": initial, "margin_ratio": r,
                 "state": STATE_OF_CODE[code]}
                for i, equity, maintenance, initial, r, code in zip(picked.tolist(), *values.T.tolist())]

    def _emitted_rows(self, built: BuiltBook) -> tuple[np.ndarray, np.ndarray]:
        """``_emitted`` as two arrays over the rows of ``built`` (time -inf and ratio NaN where
        none was sent): from then on the record of those accounts, which ``_exposures`` writes
        instead of ``_emitted`` (no dict update per snapshot), until the book is rebuilt or the
        engine's accounts change hands; ``_fold_emitted`` writes them back first."""
        cache = self._emitted_cache
        if cache is None or cache[0] is not built:
            self._fold_emitted()
            last = [self._emitted.get(a) for a in built.book.accounts]
            # float64 even when every account has sent one (ints): the compiled exposures_picked has one signature
            cache = self._emitted_cache = (
                built, np.array([-math.inf if e is None else e[0] for e in last], dtype=np.float64),
                np.array([math.nan if e is None else e[1] for e in last], dtype=np.float64))
        return cache[1], cache[2]

    def _fold_emitted(self) -> None:
        """Write the exposures the cached arrays record (``_emitted_rows``) into ``_emitted``,
        times as the ints they were sent with; the arrays stay the record."""
        cache = self._emitted_cache
        if cache is None:
            return
        built, last_t, last_ratio = cache
        sent = np.flatnonzero(last_t > -math.inf)
        accounts = built.book.accounts
        self._emitted.update((accounts[i], (int(t), ratio)) for i, t, ratio in zip(
            sent.tolist(), last_t[sent].tolist(), last_ratio[sent].tolist()))

    def _velocity(self, underlying: str, time_ms: int) -> float:
        history = self._index_history.get(underlying)
        return history.velocity(time_ms) if history is not None else 0.0

    def _realised_vols(self) -> dict[str, float]:
        """Per underlying with one, its index's realised vol (``IndexHistory.realised_vol``)."""
        vols = {}
        for u, history in self._index_history.items():
            vol = history.realised_vol()
            if vol is not None:
                vols[u] = vol
        return vols

    # ------------------------------------------------------------------ helpers

    def _circuit_action(self, change: CircuitChange) -> Action:
        """The market-wide action of the circuit's new state: halt, market_reduce_only or resume."""
        return make_action(self.key, CIRCUIT_ACTIONS[change.state], change.underlying, change.event_time_ms,
                           breach_ids=change.breach_ids,
                           params={"underlying": change.underlying, "level": str(change.level),
                                   "state": change.state.value})

    def _sign(self, decision: Decision) -> Action:
        return make_action(self.key, decision.action_type, decision.account, decision.event_time_ms,
                           instrument=decision.instrument, side=decision.side, quantity=decision.quantity,
                           breach_ids=decision.breach_ids, params=dict(decision.params))

    # ------------------------------------------------------------------ state, by account and market

    def close_tick(self, time_ms: int) -> EngineOutput:
        """Event time has reached ``time_ms``, a multiple of the revaluation interval later than
        every event applied so far, and no event at or after it has been applied: revalue the
        pending tick now, exactly as the first event at or after ``time_ms`` would have. The
        engine is then at a tick boundary (``at_boundary``), where accounts can be exported,
        dropped and imported; the outputs of the run do not change."""
        interval = self.params.revaluation_interval_ms
        if time_ms % interval or (self._last_time_ms is not None and time_ms <= self._last_time_ms):
            raise ValueError(f"close_tick({time_ms}): not a tick boundary after the last event "
                             f"({self._last_time_ms}, interval {interval} ms)")
        out = EngineOutput()
        if self._tick_end is not None:
            out = self._revalue(self._tick_end - 1)
            self._tick_end = None
        return out

    def at_boundary(self) -> bool:
        """No tick is pending: every account still marked as touched waits for an index price."""
        return self._tick_end is None and not self._moved

    def held_accounts(self) -> set[str]:
        """Every account the engine holds any state for."""
        self._fold_emitted()
        return (self.accounts.held() | self.detectors.accounts() | self.ladder.accounts() | self.penalties.accounts()
                | self._attention
                | self._emitted.keys() | self._touched.keys())

    def export_accounts(self, accounts: Collection[str]) -> list[dict[str, Any]]:
        """The state of ``accounts`` as plain data, in account order (accounts the engine holds
        nothing for are left out); only at a tick boundary. With ``market_state`` it restores
        an engine that continues exactly as this one would for those accounts."""
        self._require_boundary("export accounts")
        held = self.held_accounts()
        return [self._account_state(a) for a in sorted(set(accounts) & held)]

    def drop_accounts(self, accounts: Collection[str]) -> None:
        """Forget ``accounts`` (their partition moved elsewhere), at any point: nothing the engine
        decides for the other accounts depends on them."""
        self._fold_emitted()
        for account in accounts:
            self.accounts.drop_account(account)
            self.detectors.drop_account(account)
            self.ladder.drop_account(account)
            self.penalties.drop_account(account)
            self._attention.discard(account)
            self._emitted.pop(account, None)
            self._touched.pop(account, None)
        self._emitted_cache = self._codes_cache = None

    def import_accounts(self, states: list[dict[str, Any]]) -> None:
        """Take over accounts exported by an engine at the same point of the same market
        (``export_accounts``); only at a tick boundary, and only accounts this engine does not hold."""
        self._require_boundary("import accounts")
        clash = {s["account"] for s in states} & self.held_accounts()
        if clash:
            raise ValueError(f"import_accounts: already held here: {', '.join(sorted(clash)[:5])}")
        for s in states:
            account = s["account"]
            self.accounts.restore_account(account, s["book"])
            if s["detectors"] is not None:
                self.detectors.restore_account(account, s["detectors"])
            if s["ladder"] is not None:
                self.ladder.restore_account(account, s["ladder"])
            if s["penalty"] is not None:
                self.penalties.restore_account(account, s["penalty"])
            if s["attention"]:
                self._attention.add(account)
            if s["emitted"] is not None:
                self._emitted[account] = (s["emitted"]["time_ms"], s["emitted"]["ratio"])
            if s["waiting_ref"] is not None:
                self._touched[account] = self._seq(s["waiting_ref"])
        self._emitted_cache = self._codes_cache = None

    def market_state(self) -> dict[str, Any]:
        """Everything but the accounts, as plain data; only at a tick boundary."""
        self._require_boundary("export the market")
        return {"board": self.board.state(), "detectors": self.detectors.market_state(),
                "circuits": self.circuits.state(), "thin": sorted(self._thin),
                "index_history": [{"underlying": u, "history": h.state()} for u, h in self._index_history.items()],
                "last_time_ms": self._last_time_ms, "events": self.events}

    @classmethod
    def restore(cls, key: SigningKey, params: EngineParams | None, market: dict[str, Any],
                accounts: Sequence[dict[str, Any]] = (), reports: Callable[[str], bool] | None = None) -> Engine:
        """An engine at the tick boundary ``market`` was exported at, holding ``accounts``."""
        engine = cls(key, params, reports)
        engine.board = MarketBoard.from_state(market["board"])
        engine.detectors.restore_market(market["detectors"])
        engine.circuits = CircuitBreakers.from_state(market["circuits"], engine.params.circuit)
        engine._thin = set(market["thin"])
        for entry in market["index_history"]:
            engine._index_history[entry["underlying"]] = IndexHistory.from_state(entry["history"])
        engine._last_time_ms, engine.events = market["last_time_ms"], market["events"]
        engine.import_accounts(list(accounts))
        return engine

    def _account_state(self, account: str) -> dict[str, Any]:
        emitted, touched = self._emitted.get(account), self._touched.get(account)
        return {"account": account, "book": self.accounts.account_state(account),
                "detectors": self.detectors.account_state(account), "ladder": self.ladder.account_state(account),
                "penalty": self.penalties.account_state(account),
                "attention": account in self._attention,
                "emitted": None if emitted is None else {"time_ms": emitted[0], "ratio": emitted[1]},
                "waiting_ref": None if touched is None else self._refs[touched]}

    def _require_boundary(self, what: str) -> None:
        if not self.at_boundary():
            raise ValueError(f"cannot {what} in the middle of a tick: close_tick first")
