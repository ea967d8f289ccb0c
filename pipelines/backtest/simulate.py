"""The closed-loop simulation behind backtests and the demo: events through the engine (or not),
actions through the liquidation waterfall, fills back into the engine as position and
collateral updates, and an explicit ledger of where every dollar went.

Two modes, the same accounting:

- ``with_backstop=True``: the engine's ladder acts early (margin calls, paced partial
  liquidations, LP transfers, hedges); liquidation actions run the waterfall (book in clips →
  backstop LPs → insurance fund → ADL). The venue's own bankruptcy liquidation stays as the last
  resort (e.g. while an unreliable oracle suspends the ladder).
- ``with_backstop=False``: what a venue does with no early action — an account is liquidated
  only once its equity is at or below zero, all at once, into whatever book there is (one
  sweep, no slippage cap, no LPs, no ADL); losses beyond bankruptcy draw the fund, then are bad
  debt.

Ledger (``Ledger``): per account ``cash`` per asset (collateral as deposited; a trade's realised
PnL and fee settle in the instrument's settlement asset: USDC for linear contracts, the coin for
inverse options) and positions ``(qty, avg)``, ``avg`` as the venue quotes it (coin per unit for
an inverse option). Instruments are their ``InstrumentDefinition``'s, else their names'. Values
come from the risk core (``valuation.unit_greeks`` per contract, ``settlement_fx`` and
``quote_value`` to convert quotes, ``units_per_contract`` for notionals): equity in USD =
Σ cash × the asset's index (stablecoins at 1) + Σ (mark − avg in USD) × qty, so 2 BTC of
collateral are worth 2 × the BTC index and an inverse option's PnL is its coin PnL at the index.
Books, the waterfall and deficits work in USD per contract. Inverse futures and perpetuals are
refused (their PnL is not linear in their price). A waterfall run on an account whose equity
after the book and LP fills is negative has a *deficit*; it is covered by the fund
(``fund_draw_usd``), ADL counterparties closed at the bankruptcy price (``adl_haircut_usd``), and
what is left is ``bad_debt_usd``: ``deficit = fund_draw + adl_haircut + bad_debt`` for every
liquidation (tested). At the end, an account with negative equity is settled the same way. Cash
paid in to cover a deficit is kept per account and asset (``Ledger.covered``; a flat account's
balances are all closed out), so for every account and asset
``cash = deposits + realised − fees + covered``.

Fills are applied at the action's event time, against books that follow the mark: every fill
first places its book at the instrument's mark of that moment (``OrderBook.place_at``), so no
fill is better than the mark. A perpetual's book is its latest ``OrderBookDepth``; option books,
which the stream does not carry, are built around the option's mark with ``option_depth_share``
of the perpetual's depth, and rebuilt on every depth of the perpetual. What a fill consumes
stays consumed until that rebuild. Feedback events reach the engine ``exec_delay_ms`` after the
action.

A ``freeze_withdrawals`` action makes the venue refuse the account's later withdrawals (a
withdrawal on the stream is then not applied, ``Result.refused_withdrawals``); a
``delist_settle`` halts its instrument and settles every position in it at its ``settle_price``,
no fee.

Trading states, as the executor's venue keeps them: ``halt``, ``market_reduce_only`` and
``resume`` set their underlying's (or instrument's) state (``policy.circuit.STATE_OF_ACTION``), a
delisting halts its instrument, and every order the engine sends — hedges and liquidations — is
judged by ``policy.circuit.order_refusal`` in the stricter of its instrument's and underlying's
state before it trades: while halted or reduce-only, an order that would grow or flip the
account's position is rejected with the refusal as its reason (``Result.refused_orders``). As on
the executor's path, a refused hedge moves no position, so the engine gets no position update:
what it sent stays in flight until the account's position in that instrument next changes. A
liquidation closes at most the position held, so it always reduces and passes; so do the venue's
own bankruptcy liquidation and ADL (each closes part of an open position, never more).

Every action gets an outcome, as the executor reports it: ``accepted`` (margin calls,
reduce-only, halts, freezes), ``filled`` or ``partially_filled`` (one report per fill), or ``rejected``
with a reason (refused in the instrument's trading state, nothing to close, no counterparty, no
liquidity within the limit).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from pipelines.detect.sequencer import Sequencer
from pipelines.engine.account_book import asset_price
from pipelines.engine.engine import Engine, EngineParams
from pipelines.execution.book import BUY, SELL, OrderBook
from pipelines.execution.waterfall import (
    AdlCandidate,
    InsuranceFund,
    LiquidityPool,
    LiquidityProvider,
    WaterfallParams,
    liquidate,
)
from pipelines.policy.actions import Action
from pipelines.policy.circuit import STATE_OF_ACTION, TradingState, order_refusal, reduces_position, strictest
from pipelines.policy.signing import SigningKey
from pipelines.risk.instruments import (
    Instrument,
    InstrumentError,
    InstrumentTable,
    Kind,
    instrument_from_definition,
    parse_instrument,
    perpetual_of,
)
from pipelines.risk.market import MarketState, UnderlyingMarket
from pipelines.risk.valuation import quote_value, settlement_fx, unit_greeks, units_per_contract

EPS = 1e-9
LIQUIDATIONS = {"partial_liquidation": "all", "full_liquidation": "all", "transfer_to_lp": "lp",
                "insurance_fund": "fund", "auto_deleverage": "fund"}
BASELINE_WATERFALL = WaterfallParams(max_slippage=1.0, clip_fraction=1.0, max_clips=1, replenish_per_clip=0.0)


@dataclasses.dataclass(frozen=True)
class VenueSetup:
    insurance_fund_usd: float
    lps: tuple[LiquidityProvider, ...] = ()
    option_depth_share: float = 0.05
    waterfall: WaterfallParams = WaterfallParams()


@dataclasses.dataclass
class Liquidation:
    """One waterfall run, with its accounting."""

    account: str
    instrument: str
    event_time_ms: int
    action_id: str
    source: str  # "backstop" (an engine action), "venue" (bankruptcy liquidation) or "settlement" (end of run)
    quantity: float
    mark: float
    deficit_usd: float
    fund_draw_usd: float
    adl_haircut_usd: float
    bad_debt_usd: float
    slippage_usd: float
    fees_usd: float
    fills: list[dict[str, Any]]


@dataclasses.dataclass
class Result:
    scenario: str
    with_backstop: bool
    events: int = 0
    breaches: Counter = dataclasses.field(default_factory=Counter)
    actions: Counter = dataclasses.field(default_factory=Counter)
    liquidations: list[Liquidation] = dataclasses.field(default_factory=list)
    bad_debt_usd: float = 0.0
    fund_draw_usd: float = 0.0
    adl_haircut_usd: float = 0.0
    slippage_usd: float = 0.0
    fees_usd: float = 0.0
    liquidated_notional_usd: float = 0.0
    initial_notional_usd: float = 0.0
    bankrupt_accounts: set[str] = dataclasses.field(default_factory=set)
    liquidated_accounts: set[str] = dataclasses.field(default_factory=set)
    final_equity: dict[str, float] = dataclasses.field(default_factory=dict)
    executions: int = 0
    refused_withdrawals: int = 0  # withdrawals of accounts whose withdrawals were frozen
    refused_orders: int = 0  # orders rejected by the trading state of their instrument or underlying

    @property
    def capital_efficiency(self) -> float:
        """Share of the opening notional the run left standing (not force-closed)."""
        if self.initial_notional_usd <= 0:
            return 1.0
        return max(0.0, 1.0 - self.liquidated_notional_usd / self.initial_notional_usd)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "with_backstop": self.with_backstop, "events": self.events,
            "breaches": dict(sorted(self.breaches.items())), "actions": dict(sorted(self.actions.items())),
            "liquidations": sum(liq.source != "settlement" for liq in self.liquidations), "executions": self.executions,
            "bad_debt_usd": round(self.bad_debt_usd, 2), "insurance_fund_draw_usd": round(self.fund_draw_usd, 2),
            "adl_haircut_usd": round(self.adl_haircut_usd, 2), "slippage_usd": round(self.slippage_usd, 2),
            "fees_usd": round(self.fees_usd, 2), "liquidated_notional_usd": round(self.liquidated_notional_usd, 2),
            "capital_efficiency": round(self.capital_efficiency, 6),
            "bankrupt_accounts": sorted(self.bankrupt_accounts),
            "liquidated_accounts": sorted(self.liquidated_accounts),
        }


_INSTRUMENTS: dict[str, Instrument] = {}


def instrument(name: str) -> Instrument:
    found = _INSTRUMENTS.get(name)
    if found is None:
        found = _INSTRUMENTS[name] = parse_instrument(name)
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class Unit:
    """One contract of an instrument at the current market, from the risk core."""

    mark: float  # USD value of one contract (valuation.unit_greeks)
    usd_per_quote: float  # USD per contract per unit of the quoted price (settlement_fx x quote_value of 1)
    units: float  # underlying units per contract (valuation.units_per_contract)


def _figures(table: InstrumentTable, underlying: str, inputs: tuple[float, float, int]) -> dict[str, Unit]:
    """Per-contract figures of ``table``'s instruments (all on ``underlying``) at ``inputs``
    (index, IV, clock), by name."""
    spot, vol, now_ms = inputs
    inp = MarketState(now_ms, {underlying: UnderlyingMarket(spot, vol)}).inputs(table)
    every = np.arange(len(table))
    marks = unit_greeks(table, inp).price
    per_quote = settlement_fx(table, inp) * quote_value(table, every, np.ones(len(table)))
    units = units_per_contract(table, inp)
    return {name: Unit(mark=float(m), usd_per_quote=float(p), units=float(u))
            for name, m, p, u in zip(table.names, marks, per_quote, units)}


@functools.lru_cache(maxsize=64)
def _table(instruments: tuple[Instrument, ...]) -> InstrumentTable:
    return InstrumentTable.of(instruments)


@functools.lru_cache(maxsize=1 << 15)
def _shared_figures(instruments: tuple[Instrument, ...], underlying: str,
                    inputs: tuple[float, float, int]) -> dict[str, Unit]:
    """``_figures`` memoised per process (about 0.5 kB a tick): every run of a scenario in the
    process (with and without the backstop, every sweep point) values the same instruments at the
    same index, IV and clock, as those come from the scenario's events alone. Shared: read only."""
    return _figures(_table(instruments), underlying, inputs)


@dataclasses.dataclass(frozen=True)
class HolderArrays:
    """The holders of one underlying that hold positions (``accounts``, sorted), each term of their
    ``Ledger.equity`` a row: a position (its account, instrument, quantity and average price) or a
    cash balance (its account, asset and amount). A copy of the ledger at one ``Ledger.version``."""

    accounts: tuple[str, ...]
    names: tuple[str, ...]  # the instruments held
    assets: tuple[str, ...]  # the assets of the cash balances
    position_account: np.ndarray  # row -> index in accounts
    position_name: np.ndarray  # row -> index in names
    qty: np.ndarray
    avg: np.ndarray
    cash_account: np.ndarray
    cash_asset: np.ndarray  # row -> index in assets
    amount: np.ndarray
    terms: np.ndarray  # per account, its rows

    @classmethod
    def of(cls, accounts: list[str], positions: Mapping[str, Mapping[str, list[float]]],
           cash: Mapping[str, Mapping[str, float]]) -> HolderArrays:
        names: dict[str, int] = {}
        assets: dict[str, int] = {}
        position_rows = [(k, names.setdefault(name, len(names)), qty, avg)
                         for k, account in enumerate(accounts) for name, (qty, avg) in positions[account].items()]
        cash_rows = [(k, assets.setdefault(asset, len(assets)), amount)
                     for k, account in enumerate(accounts) for asset, amount in cash.get(account, {}).items()]
        p_account, p_name, qty, avg = _columns(position_rows, ints=2, floats=2)
        c_account, c_asset, amount = _columns(cash_rows, ints=2, floats=1)
        terms = np.bincount(p_account, minlength=len(accounts)) + np.bincount(c_account, minlength=len(accounts))
        return cls(tuple(accounts), tuple(names), tuple(assets), p_account, p_name, qty, avg, c_account, c_asset,
                   amount, terms)


def _columns(rows: list[tuple], *, ints: int, floats: int) -> list[np.ndarray]:
    """``rows``' columns as arrays: the first ``ints`` int64, the ``floats`` after them float64."""
    columns = list(zip(*rows)) or [()] * (ints + floats)
    return ([np.array(c, dtype=np.int64) for c in columns[:ints]]
            + [np.array(c, dtype=np.float64) for c in columns[ints:]])


def _per_asset() -> defaultdict[str, defaultdict[str, float]]:
    """account -> asset -> amount, zero where not set."""
    return defaultdict(lambda: defaultdict(float))


class Ledger:
    """Cash per asset, positions and marks; every trade settles realised PnL and fees into cash.

    Instruments are their ``InstrumentDefinition``'s where the stream defines them, else read from
    their names. Prices inside the simulation (books, the waterfall, ``mark``) are **USD per
    contract**; positions keep the venue's quote (``avg``: USD per unit for linear contracts, coin
    per unit for inverse options), and cash is held per asset (``USDC`` for linear settlement, the
    coin for inverse), so a BTC-margined account's equity moves with the index as a venue's does."""

    def __init__(self) -> None:
        self.cash: dict[str, dict[str, float]] = _per_asset()
        self.positions: dict[str, dict[str, list[float]]] = defaultdict(dict)
        self.index: dict[str, float] = {}
        self.iv: dict[str, float] = {}
        self.holders: dict[str, set[str]] = defaultdict(set)
        self.realised: dict[str, dict[str, float]] = _per_asset()
        self.fees: dict[str, dict[str, float]] = _per_asset()
        self.deposits: dict[str, dict[str, float]] = _per_asset()
        self.covered: dict[str, dict[str, float]] = _per_asset()
        self.covered_usd: dict[str, float] = defaultdict(float)
        self.home: dict[str, str] = {}  # account -> the asset of its first collateral (deficits are covered in it)
        self.now_ms = 0
        self._defined: dict[str, Instrument] = {}
        self._names: dict[str, list[str]] = defaultdict(list)  # underlying -> instruments valued on it
        self._tables: dict[str, tuple[Instrument, ...]] = {}  # underlying -> the instruments of its _names
        self._units: dict[str, tuple[tuple[float, float, int], dict[str, Unit]]] = {}  # underlying -> (inputs, units)
        self.version = 0  # counts the changes of cash, positions and holders
        self._holder_arrays: dict[str, tuple[int, HolderArrays]] = {}  # underlying -> (version, its arrays)

    def instrument(self, name: str) -> Instrument:
        """``name``'s instrument: its definition's, else its name's (linear, contract size 1)."""
        return self._defined.get(name) or instrument(name)

    def define(self, value: Mapping[str, Any]) -> None:
        """Take an ``InstrumentDefinition``. One that contradicts itself leaves the name in charge,
        as in the engine. Inverse futures and perpetuals are refused: their PnL is not linear in
        their price, which the waterfall's per-contract prices assume."""
        try:
            inst = instrument_from_definition(value)
        except InstrumentError:
            self._defined.pop(value["instrument"], None)
        else:
            if inst.inverse and inst.kind is not Kind.OPTION:
                raise InstrumentError(f"backtest: inverse {inst.kind} {inst.name!r} is not simulated "
                                      "(only linear contracts and inverse options are)")
            self._defined[inst.name] = inst
        self._names.clear()
        self._tables.clear()
        self._units.clear()
        self.version += 1

    def settlement(self, name: str) -> str:
        """The asset ``name``'s PnL and fees settle in: its coin if inverse, else USDC."""
        inst = self.instrument(name)
        return inst.underlying if inst.inverse else "USDC"

    def unit(self, name: str) -> Unit:
        """``name``'s per-contract figures at the current index, IV and clock, from the risk core.
        Every instrument valued so far on ``name``'s underlying is valued in one call when that
        underlying's index, IV or the clock moved, and kept while they stand still (a bankruptcy
        check marks the same few instruments for every holder); the figures of a tick are shared
        by every run of the process that values the same instruments at it (``_shared_figures``).
        The risk core's arithmetic is element-wise, so a contract's figures do not depend on the
        others in the call (``unit_of``, one instrument at a time, is the reference)."""
        underlying = self.instrument(name).underlying
        inputs = (self.index[underlying], self.iv.get(underlying, 0.6), self.now_ms)
        cached = self._units.get(underlying)
        if cached is not None and cached[0] == inputs:
            unit = cached[1].get(name)
            if unit is not None:
                return unit
        if name not in self._names[underlying]:
            self._names[underlying].append(name)
            self._tables.pop(underlying, None)
        instruments = self._tables.get(underlying)
        if instruments is None:
            instruments = self._tables[underlying] = tuple(self.instrument(n) for n in sorted(self._names[underlying]))
        units = _shared_figures(instruments, underlying, inputs)
        self._units[underlying] = (inputs, units)
        return units[name]

    def unit_of(self, name: str) -> Unit:
        """``unit(name)`` computed for ``name`` alone, uncached: the reference ``unit`` must equal."""
        underlying = self.instrument(name).underlying
        inputs = (self.index[underlying], self.iv.get(underlying, 0.6), self.now_ms)
        return _figures(InstrumentTable.of([self.instrument(name)]), underlying, inputs)[name]

    def mark(self, name: str) -> float:
        """USD value of one contract now (Black-76 at the underlying's IV for options, the coin
        premium at the index for inverse ones)."""
        return self.unit(name).mark

    def quote(self, name: str, usd: float) -> float:
        """A USD-per-contract price as the venue quotes ``name`` (USD or coin per unit)."""
        return usd / self.unit(name).usd_per_quote

    def usd(self, name: str, quote: float) -> float:
        """A quoted price of ``name`` in USD per contract, at the current index."""
        return quote * self.unit(name).usd_per_quote

    def asset_usd(self, asset: str) -> float:
        """USD per unit of ``asset`` now (stablecoins at 1, coins at their index)."""
        return asset_price(asset, self.index)

    def equity(self, account: str) -> float:
        """USD: every asset's cash at its index plus every position's PnL against its average price."""
        cash = 0.0
        for asset, amount in self.cash[account].items():
            cash += amount * self.asset_usd(asset)
        pnl = 0.0
        for name, (qty, avg) in self.positions[account].items():
            unit = self.unit(name)
            pnl += (unit.mark - avg * unit.usd_per_quote) * qty
        return cash + pnl

    def maybe_bankrupt(self, underlying: str) -> list[str]:
        """The holders of ``underlying`` with positions whose ``equity`` may be at or below zero,
        sorted: every holder with positions left out has ``equity`` above zero. All holders are
        valued at once over their ``HolderArrays``: the same terms as ``equity`` (each position's
        PnL, each balance at its asset's price), bit for bit, summed in another order. Two
        summation orders of n terms differ by at most 2 γ(n-1) Σ|term| (γ(k) = k u / (1 - k u),
        u = 2^-53), under 2^-51 n Σ|term|, so an account whose value here exceeds that has
        ``equity`` above zero; any other (NaN and infinities included) is returned."""
        arrays = self._holders_of(underlying)
        if not arrays.accounts:
            return []
        units = [self.unit(name) for name in arrays.names]
        mark = np.array([unit.mark for unit in units])
        per_quote = np.array([unit.usd_per_quote for unit in units])
        price = np.array([self.asset_usd(asset) for asset in arrays.assets])
        pnl = (mark[arrays.position_name] - arrays.avg * per_quote[arrays.position_name]) * arrays.qty
        cash = arrays.amount * price[arrays.cash_asset]
        n = len(arrays.accounts)
        value = np.bincount(arrays.cash_account, cash, n) + np.bincount(arrays.position_account, pnl, n)
        size = np.bincount(arrays.cash_account, np.abs(cash), n) + np.bincount(arrays.position_account, np.abs(pnl), n)
        above = value > size * arrays.terms * 2.0**-51
        return [account for account, safe in zip(arrays.accounts, above.tolist()) if not safe]

    def _holders_of(self, underlying: str) -> HolderArrays:
        """``underlying``'s ``HolderArrays`` at the current ``version``, built when it moved."""
        kept = self._holder_arrays.get(underlying)
        if kept is None or kept[0] != self.version:
            accounts = sorted(a for a in self.holders.get(underlying, ()) if self.positions.get(a))
            kept = (self.version, HolderArrays.of(accounts, self.positions, self.cash))
            self._holder_arrays[underlying] = kept
        return kept[1]

    def notional_of(self, name: str, qty: float) -> float:
        """USD notional of ``qty`` contracts: underlying units at the index."""
        return abs(qty) * self.unit(name).units * self.index[self.instrument(name).underlying]

    def notional(self, account: str) -> float:
        return sum(self.notional_of(n, q) for n, (q, _) in self.positions[account].items())

    def trade(self, account: str, name: str, qty: float, price: float, fee: float = 0.0) -> None:
        """Buy (qty > 0) or sell ``qty`` contracts at ``price`` USD per contract, paying ``fee``
        USD; PnL and fee settle in ``name``'s settlement asset at the current index."""
        price = self.quote(name, price)
        per_quote = self.unit(name).usd_per_quote / self.asset_usd(self.settlement(name))  # asset per quote unit
        asset = self.settlement(name)
        q, avg = self.positions[account].get(name, (0.0, 0.0))
        if q * qty < 0:  # reduces (and maybe flips)
            closed = min(abs(qty), abs(q)) * (1.0 if q > 0 else -1.0)
            pnl = (price - avg) * closed * per_quote
            self.cash[account][asset] += pnl
            self.realised[account][asset] += pnl
            q_new = q + qty
            avg_new = avg if q_new * q > 0 else price
        else:
            q_new = q + qty
            avg_new = (q * avg + qty * price) / q_new if abs(q_new) > EPS else 0.0
        fee_asset = fee / self.asset_usd(asset)
        self.cash[account][asset] -= fee_asset
        self.fees[account][asset] += fee_asset
        if abs(q_new) <= EPS:
            self.positions[account].pop(name, None)
        else:
            self.positions[account][name] = [q_new, avg_new]
        self.holders[self.instrument(name).underlying].add(account)
        self.version += 1

    def cover(self, account: str, usd: float) -> None:
        """Cover an account's deficit of ``usd`` (the fund's money, ADL's, or bad debt). A flat
        account is closed out: every asset's balance goes to zero (the venue takes what is left
        of its collateral against its debts, so nothing stays exposed to the index). An account
        with positions left is paid in its home asset (its first collateral's, USDC if none) at
        the index."""
        if self.positions[account]:
            asset = self.home.get(account, "USDC")
            paid = {asset: usd / self.asset_usd(asset)}
        else:
            paid = {asset: -amount for asset, amount in self.cash[account].items()}
        for asset, amount in paid.items():
            self.cash[account][asset] += amount
            self.covered[account][asset] += amount
        self.covered_usd[account] += usd
        self.version += 1

    def apply(self, record: str, value: Mapping[str, Any]) -> None:
        self.now_ms = max(self.now_ms, value["event_time_ms"])
        if record == "IndexPrice":
            self.index[value["underlying"]] = value["price"]
        elif record == "VolatilityUpdate" and value.get("iv") and not value.get("instrument"):
            self.iv[value["underlying"]] = value["iv"]
        elif record == "InstrumentDefinition":
            self.define(value)
        elif record == "PositionUpdate":
            if value["quantity"] == 0:
                self.positions[value["account"]].pop(value["instrument"], None)
            else:
                self.positions[value["account"]][value["instrument"]] = [value["quantity"], value["average_price"]]
            self.holders[self.instrument(value["instrument"]).underlying].add(value["account"])
            self.version += 1
        elif record == "CollateralUpdate":
            account, asset = value["account"], value["asset"]
            self.home.setdefault(account, asset)
            self.deposits[account][asset] += value["amount"] - self.cash[account][asset]
            self.cash[account][asset] = value["amount"]
            self.version += 1


class Simulation:
    def __init__(self, scenario_name: str, venue: VenueSetup, *, with_backstop: bool,
                 params: EngineParams | None = None, key: SigningKey | None = None, exec_delay_ms: int = 50,
                 on_output: Callable[[str, Any], None] | None = None) -> None:
        self.venue = venue
        self.with_backstop = with_backstop
        self.engine = Engine(key or SigningKey("backtest", b"backtest-signing-key"), params) if with_backstop else None
        self.ledger = Ledger()
        self.fund = InsuranceFund(venue.insurance_fund_usd)
        self.pool = LiquidityPool(venue.lps)
        self.books: dict[str, OrderBook] = {}
        self.depth: dict[str, Mapping[str, Any]] = {}
        self.exec_delay_ms = exec_delay_ms
        self.result = Result(scenario_name, with_backstop)
        self.on_output = on_output or (lambda kind, value: None)
        self._feedback: list[tuple[int, int, str, dict[str, Any]]] = []
        self._fb_seq = 0
        self._sequence: dict[str, int] = defaultdict(lambda: 1000)
        self._opened: set[str] = set()
        self._frozen: set[str] = set()  # accounts whose withdrawals the venue refuses
        self._states: dict[str, TradingState] = {}  # underlying or instrument -> its state; ACTIVE when absent

    # ------------------------------------------------------------------ driving

    def run(self, events: Iterable[tuple[str, str, Mapping[str, Any], str]],
            progress: Callable[[int], None] | None = None) -> Result:
        """``events``: (topic, record, value, ref) in sequencer order."""
        n = 0
        for _topic, record, value, ref in events:
            t = value["event_time_ms"]
            while self._feedback and self._feedback[0][0] < t:
                self._feed(*self._pop_feedback())
            self._step(record, value, ref)
            n += 1
            if progress is not None and n % 500 == 0:
                progress(n)
        while self._feedback:
            self._feed(*self._pop_feedback())
        if self.engine is not None:
            self._engine_output(self.engine.flush())
        self._settle()
        self.result.events = n
        return self.result

    def _pop_feedback(self) -> tuple[str, dict[str, Any], str]:
        _, _, record, value = heapq.heappop(self._feedback)
        return record, value, f"feedback:{value['account']}:{value['sequence']}"

    def _feed(self, record: str, value: dict[str, Any], ref: str) -> None:
        self.on_output("input", (record, value))
        if self.engine is not None:
            self._engine_output(self.engine.on_event(record, value, ref))

    def _step(self, record: str, value: Mapping[str, Any], ref: str) -> None:
        if record == "CollateralUpdate" and value["reason"] == "withdrawal" and value["account"] in self._frozen:
            self.result.refused_withdrawals += 1  # the venue refuses it: the balance stays
            return
        self.ledger.apply(record, value)
        self.on_output("input", (record, value))
        if record == "OrderBookDepth":
            self.depth[value["instrument"]] = value
            self._drop_books(value["instrument"])
        elif record == "PositionUpdate" and value["account"] not in self._opened:
            self._opened.add(value["account"])
        if self.engine is not None:
            self._engine_output(self.engine.on_event(record, value, ref))
        if record == "IndexPrice":
            self._bankruptcy_check(value["underlying"], value["event_time_ms"])

    def _engine_output(self, out) -> None:
        for exposure in out.exposures:
            self.on_output("exposure", exposure)
        for breach in out.breaches:
            if not breach.cleared:
                self.result.breaches[breach.kind.value] += 1
            self.on_output("breach", breach)
        for action in out.actions:
            self.result.actions[action.action_type.value] += 1
            self.on_output("action", action)
            for report in self.execute(action):
                self.on_output("execution", report)

    # ------------------------------------------------------------------ execution

    def _drop_books(self, depth_instrument: str) -> None:
        """A new depth for ``depth_instrument``: its book, and the option books sized on it, are rebuilt."""
        depth_of = self.ledger.instrument(depth_instrument)
        for name in [n for n in self.books if n == depth_instrument or (
                self.ledger.instrument(n).kind is Kind.OPTION
                and self.ledger.instrument(n).underlying == depth_of.underlying)]:
            del self.books[name]

    def _book(self, name: str) -> OrderBook:
        """The book ``name`` fills against now: built if need be, placed at the instrument's mark."""
        mark = self.ledger.mark(name)
        book = self.books.get(name)
        if book is None:
            inst = self.ledger.instrument(name)
            if inst.kind is Kind.OPTION:
                perp = self.depth.get(perpetual_of(inst.underlying))
                usd = 0.0
                if perp is not None:
                    bids_usd = sum(level["price"] * level["quantity"] for level in perp["bids"])
                    usd = bids_usd * self.venue.option_depth_share
                qty = usd / max(mark, 1e-9) / 10
                book = OrderBook([(mark * (1 - 0.005 * i), qty) for i in range(1, 11)],
                                 [(mark * (1 + 0.005 * i), qty) for i in range(1, 11)], anchor=mark)
            else:
                depth = self.depth.get(name)
                book = OrderBook.from_depth(depth) if depth else OrderBook([], [])
            self.books[name] = book
        return book.place_at(mark)

    def execute(self, action: Action) -> list[dict[str, Any]]:
        """Carry ``action`` out as the venue would; its reports (at least one: every action has an
        outcome)."""
        kind = action.action_type
        if kind in LIQUIDATIONS:
            return self._liquidation_action(action)
        if kind == "delta_hedge":
            return self._hedge(action)
        if kind == "delist_settle":
            self._set_state(action.instrument or action.target, TradingState.HALTED)
            return self._delist(action)
        if kind in STATE_OF_ACTION:
            self._set_state(action.instrument or action.target, STATE_OF_ACTION[kind])
        elif kind == "freeze_withdrawals":
            self._frozen.add(action.target)
        return [_outcome(action, "accepted")]

    def _set_state(self, market: str, state: TradingState) -> None:
        """From now on orders on ``market`` (an underlying: every instrument on it) are judged in ``state``."""
        if state is TradingState.ACTIVE:
            self._states.pop(market, None)
        else:
            self._states[market] = state

    def trading_state(self, name: str) -> TradingState:
        """The stricter of the states of instrument ``name`` and of its underlying (ACTIVE when neither is set)."""
        return strictest(self._states.get(market, TradingState.ACTIVE)
                         for market in (name, self.ledger.instrument(name).underlying))

    def _refused(self, action: Action, name: str, signed: float) -> list[dict[str, Any]] | None:
        """The rejection of trading ``signed`` contracts (buy > 0) of ``name`` for ``action``'s account
        when ``order_refusal`` refuses it in the instrument's trading state, else None. A refused
        order changes nothing in the ledger."""
        held = self.ledger.positions[action.target].get(name, (0.0, 0.0))[0]
        refusal = order_refusal(self.trading_state(name), name, reduces_position(held, signed))
        if refusal is None:
            return None
        self.result.refused_orders += 1
        return [_outcome(action, "rejected", refusal)]

    def _delist(self, action: Action) -> list[dict[str, Any]]:
        """Halt the instrument and settle every position in it at the action's ``settle_price``
        (quoted as the venue quotes it), no fee: what Hyperliquid did with JELLY. Each settled
        position is one ``filled`` report, its notional counted as force-closed."""
        name, t = action.instrument, action.event_time_ms
        price = float(action.params["settle_price"])
        ledger = self.ledger
        reports = []
        for account in sorted(ledger.holders.get(ledger.instrument(name).underlying, ())):
            q = ledger.positions[account].get(name, (0.0, 0.0))[0]
            if abs(q) <= EPS:
                continue
            side = SELL if q > 0 else BUY
            ledger.trade(account, name, -q, ledger.usd(name, price))
            self.result.liquidated_notional_usd += ledger.notional_of(name, q)
            self.result.executions += 1
            self._feedback_for(account, name, t)
            reports.append(_report(action.action_id, len(reports), account, name, side, abs(q), price, 0.0,
                                   "simulated", "settlement", t, None, "filled"))
        return reports or [_outcome(action, "accepted", "no open position to settle")]

    def _liquidation_action(self, action: Action) -> list[dict[str, Any]]:
        account, name = action.target, action.instrument
        if not name:
            return [_outcome(action, "rejected", "missing_field: no instrument")]
        held = self.ledger.positions[account].get(name, (0.0, 0.0))[0]
        signed = action.quantity if action.side == SELL else -action.quantity
        if held * signed <= 0:
            return [_outcome(action, "rejected", f"nothing to close: the account holds {held:g} {name}")]
        signed = math.copysign(min(abs(signed), abs(held)), held)  # only reduces: passes every trading state
        kind = action.action_type
        return self._liquidate(account, name, signed, action.event_time_ms, action.action_id, "backstop",
                               LIQUIDATIONS[kind], self.venue.waterfall, adl=True,
                               close_all=kind not in ("partial_liquidation", "transfer_to_lp"))

    def _hedge(self, action: Action) -> list[dict[str, Any]]:
        account, name, t = action.target, action.instrument, action.event_time_ms
        if not name or self.ledger.instrument(name).underlying not in self.ledger.index:
            return [_outcome(action, "rejected", f"no market for {name}")]
        side = action.side
        refused = self._refused(action, name, action.quantity if side == BUY else -action.quantity)
        if refused is not None:
            return refused
        mark = self.ledger.mark(name)
        sweep = self._book(name).sweep(side, action.quantity, action.limit_price)
        if sweep.filled <= EPS:
            return [_outcome(action, "rejected", "no liquidity within limit")]
        fee = sweep.notional * self.venue.waterfall.taker_fee
        qty = sweep.filled if side == BUY else -sweep.filled
        self.ledger.trade(account, name, qty, sweep.avg_price, fee)
        self.result.fees_usd += fee
        self.result.slippage_usd += _worse_than_mark(side, sweep.avg_price, mark) * sweep.filled
        self.result.executions += 1
        self._feedback_for(account, name, t)
        status = "filled" if sweep.filled >= action.quantity - EPS else "partially_filled"
        return [_report(action.action_id, 0, account, name, side, sweep.filled,
                        self.ledger.quote(name, sweep.avg_price), fee, "simulated", "book", t,
                        _slippage_bps(side, sweep.avg_price, mark), status)]

    def _bankruptcy_check(self, underlying: str, t: int) -> None:
        """The venue liquidates every holder of ``underlying`` whose equity is at or below zero, in
        account order. A venue liquidation trades one account against the book and moves no other
        account's equity, so the holders are screened at once (``Ledger.maybe_bankrupt``) and the
        few that may be bankrupt checked one by one (``Ledger.equity``)."""
        for account in self.ledger.maybe_bankrupt(underlying):
            equity = self.ledger.equity(account)
            if equity <= 0:
                self.result.bankrupt_accounts.add(account)
                for name, (q, _) in sorted(self.ledger.positions[account].items()):
                    self._venue_liquidate(account, name, q, t)

    def _venue_liquidate(self, account: str, name: str, position: float, t: int) -> None:
        """The venue's own liquidation at bankruptcy: one sweep of whatever book there is, no cap,
        no LPs, no ADL. What the book cannot take stays open (no bidders: tried again on the next
        tick); once the account is flat, a negative equity draws the fund, then is bad debt."""
        ledger = self.ledger
        mark = ledger.mark(name)
        side = SELL if position > 0 else BUY
        sign = 1.0 if position > 0 else -1.0
        sweep = self._book(name).sweep(side, abs(position), None)
        action_id = f"venue-liquidation:{account}:{name}:{t}"
        fills, slippage, fee, deficit, draw, bad = [], 0.0, 0.0, 0.0, 0.0, 0.0
        if sweep.filled > EPS:
            fee = sweep.notional * self.venue.waterfall.taker_fee
            ledger.trade(account, name, -sign * sweep.filled, sweep.avg_price, fee)
            slippage = (mark - sweep.avg_price) * sweep.filled * sign
            fills.append({"step": "book", "counterparty": "book", "quantity": sweep.filled, "price": sweep.avg_price,
                          "fee_usd": fee, "event_time_ms": t})
            self.result.executions += 1
            status = "filled" if sweep.filled >= abs(position) - EPS else "partially_filled"
            self.on_output("execution", _report(action_id, 0, account, name, side, sweep.filled,
                                                ledger.quote(name, sweep.avg_price), fee,
                                                "simulated", "book", t, _slippage_bps(side, sweep.avg_price, mark),
                                                status))
        if not ledger.positions[account]:
            equity = ledger.equity(account)
            if equity < -EPS:
                deficit = -equity
                draw = self.fund.draw(deficit)
                bad = deficit - draw
                ledger.cover(account, deficit)
        if not fills and not deficit:
            return
        r = self.result
        r.liquidations.append(Liquidation(account, name, t, action_id, "venue", sweep.filled, mark, deficit, draw, 0.0,
                                          bad, slippage, fee, fills))
        r.bad_debt_usd += bad
        r.fund_draw_usd += draw
        r.slippage_usd += slippage
        r.fees_usd += fee
        r.liquidated_notional_usd += ledger.notional_of(name, sweep.filled)
        r.liquidated_accounts.add(account)
        self._feedback_for(account, name, t)

    def _adl_candidates(self, account: str, name: str) -> list[AdlCandidate]:
        out = []
        ledger = self.ledger
        for other in sorted(ledger.holders.get(ledger.instrument(name).underlying, ())):
            if other == account or name not in ledger.positions[other]:
                continue
            q, avg = ledger.positions[other][name]
            out.append(AdlCandidate(other, q, ledger.usd(name, avg), ledger.equity(other)))
        return out

    def _liquidate(self, account: str, name: str, position: float, t: int, action_id: str, source: str, steps: str,
                   params: WaterfallParams, *, adl: bool, close_all: bool = True) -> list[dict[str, Any]]:
        """Run the waterfall on ``position`` (signed, the quantity closed); its reports, one per fill
        (``partially_filled`` when the fills fall short of the position), or one ``rejected``."""
        ledger = self.ledger
        mark = ledger.mark(name)
        equity = ledger.equity(account)
        book = self._book(name) if steps == "all" else OrderBook([], [])
        pool = self.pool if steps in ("all", "lp") and source == "backstop" else LiquidityPool([])
        candidates = self._adl_candidates(account, name) if adl else []
        fund_before = self.fund.balance_usd
        result = liquidate(account, name, position, mark, equity, book, pool, self.fund, candidates, t, params,
                           close_all)
        sign = 1.0 if position > 0 else -1.0
        side = SELL if sign > 0 else BUY
        if not result.fills:
            self._feedback_for(account, name, t)  # the engine learns that nothing of the in-flight quantity landed
            return [_report(action_id, 0, account, name, side, 0.0, None, 0.0, "simulated", "", t, None, "rejected",
                            f"no counterparty in {steps}: {abs(position):g} left with the account")]
        slippage = fees = haircut = 0.0
        deficit = None
        for fill in result.fills:
            if fill.step in ("insurance_fund", "adl") and deficit is None:
                deficit = max(0.0, -ledger.equity(account))
            ledger.trade(account, name, -sign * fill.quantity, fill.price, fill.fee_usd)
            if fill.step == "adl":
                ledger.trade(fill.counterparty, name, sign * fill.quantity, fill.price)
                haircut += (fill.price - mark) * fill.quantity * sign
                self._feedback_for(fill.counterparty, name, t)
            if fill.step in ("book", "lp"):
                slippage += (mark - fill.price) * fill.quantity * sign
            fees += fill.fee_usd
        closed = sum(fill.quantity for fill in result.fills)
        status = "filled" if closed >= abs(position) - EPS else "partially_filled"
        venue_of = {"book": "simulated", "lp": "lp", "insurance_fund": "insurance_fund", "adl": "adl"}
        reports = [_report(action_id, i, account, name, side, fill.quantity, ledger.quote(name, fill.price),
                           fill.fee_usd, venue_of[fill.step], fill.counterparty, fill.event_time_ms, fill.slippage_bps,
                           status)
                   for i, fill in enumerate(result.fills)]
        self.result.executions += len(reports)
        if deficit is None:
            deficit = max(0.0, -ledger.equity(account))
        residual = ledger.equity(account)
        if residual < -EPS:  # fills past bankruptcy: the fund paid (or failed to pay: bad debt) the deficit
            ledger.cover(account, -residual)
        liq = Liquidation(account, name, t, action_id, source, closed, mark, deficit, result.fund_draw_usd,
                          max(haircut, 0.0), result.bad_debt_usd, slippage, fees,
                          [dataclasses.asdict(f) for f in result.fills])
        r = self.result
        r.liquidations.append(liq)
        r.bad_debt_usd += result.bad_debt_usd
        r.fund_draw_usd += fund_before - self.fund.balance_usd if fund_before > self.fund.balance_usd else 0.0
        r.adl_haircut_usd += max(haircut, 0.0)
        r.slippage_usd += slippage
        r.fees_usd += fees
        r.liquidated_notional_usd += ledger.notional_of(name, closed)
        r.liquidated_accounts.add(account)
        self._feedback_for(account, name, t)
        return reports

    def _feedback_for(self, account: str, name: str, t: int) -> None:
        """The executed trade as the engine would see it: a PositionUpdate (average price as the
        venue quotes it) and a CollateralUpdate per asset the account holds, in that asset."""
        if self.engine is None:
            return
        q, avg = self.ledger.positions[account].get(name, (0.0, 0.0))
        at = t + self.exec_delay_ms
        updates = [("PositionUpdate", {"account": account, "instrument": name, "quantity": q, "average_price": avg})]
        updates += [("CollateralUpdate", {"account": account, "asset": asset, "amount": amount, "change": 0.0,
                                          "reason": "liquidation"})
                    for asset, amount in sorted(self.ledger.cash[account].items())]
        for record, value in updates:
            self._sequence[account] += 1
            value.update(sequence=self._sequence[account], event_time_ms=at)
            self._fb_seq += 1
            heapq.heappush(self._feedback, (at, self._fb_seq, record, value))

    # ------------------------------------------------------------------ end of run

    def _settle(self) -> None:
        """Accounts with negative equity at the end (still open, or flat but left short of an asset
        whose index moved since): the deficit is drawn from the fund, the rest is bad debt."""
        for account in sorted(self.ledger.positions.keys() | self.ledger.cash.keys()):
            equity = self.ledger.equity(account)
            if equity < -EPS:
                self.result.bankrupt_accounts.add(account)
                paid = self.fund.draw(-equity)
                self.result.fund_draw_usd += paid
                self.result.bad_debt_usd += -equity - paid
                self.result.liquidations.append(Liquidation(account, "", self.ledger.now_ms, f"settlement:{account}",
                                                            "settlement", 0.0, 0.0, -equity, paid, 0.0, -equity - paid,
                                                            0.0, 0.0, []))
                self.ledger.cover(account, -equity)
            self.result.final_equity[account] = self.ledger.equity(account)

    def opening_notional(self) -> float:
        return sum(self.ledger.notional(a) for a in self.ledger.positions)


def _report(action_id: str, seq: int, account: str, name: str | None, side: str | None, qty: float,
            price: float | None, fee: float, venue: str, counterparty: str, t: int, slippage_bps: float | None = None,
            status: str = "filled", reason: str | None = None) -> dict[str, Any]:
    return {"execution_id": f"{action_id}/{seq}", "action_id": action_id, "account": account, "status": status,
            "venue": venue, "instrument": name, "side": side, "filled_quantity": float(qty),
            "avg_price": None if price is None else float(price), "fee": float(fee), "fee_currency": "USD",
            "slippage_bps": slippage_bps, "counterparty": counterparty, "reason": reason, "event_time_ms": int(t)}


def _outcome(action: Action, status: str, reason: str | None = None) -> dict[str, Any]:
    """The one report of an action that trades nothing (``accepted``, or ``rejected`` with its reason)."""
    return _report(action.action_id, 0, action.target, action.instrument, action.side, 0.0, None,
                   0.0, "simulated", "", action.event_time_ms, None, status, reason)


def _worse_than_mark(side: str, price: float, mark: float) -> float:
    """How much worse than ``mark`` a fill of ``side`` at ``price`` is, per unit (negative: better)."""
    return price - mark if side == BUY else mark - price


def _slippage_bps(side: str, price: float, mark: float) -> float:
    """Slippage against the mark in basis points, positive when worse (the ExecutionReport's convention)."""
    return _worse_than_mark(side, price, mark) / mark * 1e4


def sequence_events(events: Iterable[tuple[str, str, Mapping[str, Any]]], partitions: Mapping[str, int] | None = None
                    ) -> list[tuple[str, str, Mapping[str, Any], str]]:
    """Events of a recording in the ``Sequencer``'s deterministic event-time order, with refs
    ``topic:partition:offset`` (offsets counted per topic-partition, as in the recording)."""
    from pipelines.engine.shards import partition_for
    from pipelines.topics import spec_for

    seq = Sequencer(0)
    offsets: dict[str, int] = {}
    keys = {"IndexPrice": "underlying", "MarkPrice": "instrument", "VolatilityUpdate": "underlying",
            "OrderBookDepth": "instrument", "OraclePrice": "underlying", "PositionUpdate": "account",
            "CollateralUpdate": "account", "InstrumentDefinition": "instrument"}
    for topic, record, value in events:
        part = partition_for(value[keys[record]], spec_for(topic).partitions)
        name = f"{topic}/{part}"
        offset = offsets.get(name, 0)
        offsets[name] = offset + 1
        seq.push(name, value["event_time_ms"], (topic, record, value, f"{topic}:{part}:{offset}"))
    for name in list(offsets):
        seq.close(name)
    return seq.pop_ready()
