"""One shard's deterministic engine: decoded events in, breaches and signed actions out.

The engine holds the shard's market view and its accounts, and drives the pure stages in order:
detectors on every market and collateral event; revaluation of the accounts a change touched,
batched per ``revaluation_interval_ms`` of *event time* and vectorised through the risk core;
the margin detectors on each revaluation; the circuit breakers and the account ladder; signed
actions. Nothing here reads a clock or does I/O, so the same events in the same order give the
same breaches and actions, byte for byte — whether a faust worker or the in-process replay feeds
them (both through a ``Sequencer``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict, deque
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from pipelines.detect.breach import Breach, BreachKind
from pipelines.detect.detectors import DetectorParams, Detectors
from pipelines.engine.market_board import MarketBoard
from pipelines.policy.actions import ActionType, make_action
from pipelines.policy.circuit import CircuitBreakers, CircuitParams, TradingState
from pipelines.policy.ladder import AccountView, CloseIntent, Decision, Ladder, LadderParams
from pipelines.policy.signing import SigningKey
from pipelines.risk.adaptive import AdaptiveParams
from pipelines.risk.book import Book, revalue_book
from pipelines.risk.instruments import Instrument, InstrumentTable, parse_instrument
from pipelines.risk.liquidation_order import plan_liquidation
from pipelines.risk.margin import MarginConfig

YEAR_MS = 365.0 * 86_400_000.0
STABLE = {"USD", "USDC", "USDT"}
VELOCITY_WINDOW_MS = 60_000
REALISED_WINDOW_MS = 5 * 60_000


@dataclasses.dataclass(frozen=True)
class EngineParams:
    revaluation_interval_ms: int = 250
    detectors: DetectorParams = DetectorParams()
    circuit: CircuitParams = CircuitParams()
    ladder: LadderParams = LadderParams()
    margin: MarginConfig = MarginConfig()
    adaptive: AdaptiveParams | None = AdaptiveParams()
    hedged_accounts: frozenset[str] = frozenset()


@dataclasses.dataclass
class EngineOutput:
    breaches: list[Breach] = dataclasses.field(default_factory=list)
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    exposures: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def extend(self, other: "EngineOutput") -> None:
        self.breaches += other.breaches
        self.actions += other.actions
        self.exposures += other.exposures


@lru_cache(maxsize=100_000)
def _instrument(name: str) -> Instrument:
    return parse_instrument(name)


class Engine:
    def __init__(self, key: SigningKey, params: EngineParams | None = None) -> None:
        self.key = key
        self.params = params or EngineParams()
        self.board = MarketBoard()
        self.detectors = Detectors(self.params.detectors)
        self.circuits = CircuitBreakers(self.params.circuit)
        self.ladder = Ladder(self.params.ladder)
        self.positions: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
        self.collateral: dict[str, dict[str, float]] = defaultdict(dict)
        self._holders: dict[str, set[str]] = defaultdict(set)
        self._dirty: dict[str, str] = {}  # account -> ref of the event that dirtied it
        self._thin: set[str] = set()  # instruments in an active liquidity breach
        self._index_history: dict[str, deque[tuple[int, float]]] = defaultdict(deque)
        self._tick_end: int | None = None
        self._last_time_ms: int | None = None
        self.events = 0

    # ------------------------------------------------------------------ input

    def on_event(self, record: str, value: Mapping[str, Any], ref: str) -> EngineOutput:
        """Apply one decoded, validated record (in sequencer order)."""
        t = value["event_time_ms"]
        out = EngineOutput()
        if self._tick_end is not None and t >= self._tick_end:
            out.extend(self._revalue(self._tick_end - 1))
        if self._tick_end is None or t >= self._tick_end:
            interval = self.params.revaluation_interval_ms
            self._tick_end = (t // interval + 1) * interval
        self._last_time_ms = t if self._last_time_ms is None else max(self._last_time_ms, t)
        self.events += 1
        if record in ("PositionUpdate", "CollateralUpdate"):
            out.extend(self._on_account(record, value, ref))
        else:
            out.extend(self._on_market(record, value, ref))
        return out

    def flush(self) -> EngineOutput:
        """Revalue what is still dirty (end of a replay, or an idle live stream)."""
        if self._last_time_ms is None:
            return EngineOutput()
        return self._revalue(self._last_time_ms)

    def _on_account(self, record: str, value: Mapping[str, Any], ref: str) -> EngineOutput:
        account = value["account"]
        out = EngineOutput()
        if record == "PositionUpdate":
            instrument = value["instrument"]
            if value["quantity"] == 0:
                self.positions[account].pop(instrument, None)
            else:
                self.positions[account][instrument] = (value["quantity"], value["average_price"])
            self._holders[instrument.split("-")[0]].add(account)
            self.ladder.on_position_update(account, instrument)
        else:
            self.collateral[account][value["asset"]] = value["amount"]
            change_usd = value["change"] * self._asset_price(value["asset"])
            breaches = self.detectors.on_collateral(account, value["event_time_ms"], change_usd,
                                                    self._collateral_usd(account), ref)
            out.breaches += breaches
        self._dirty[account] = ref
        return out

    def _on_market(self, record: str, value: Mapping[str, Any], ref: str) -> EngineOutput:
        t = value["event_time_ms"]
        out = EngineOutput()
        moved = self.board.apply(record, value)
        d = self.detectors
        if record == "IndexPrice":
            underlying = value["underlying"]
            history = self._index_history[underlying]
            history.append((t, value["price"]))
            while history and history[0][0] < t - REALISED_WINDOW_MS:
                history.popleft()
            out.breaches += d.on_index(underlying, t, value["price"], ref)
        elif record == "VolatilityUpdate" and value.get("iv") is not None:
            out.breaches += d.on_iv(value.get("instrument") or value["underlying"], t, value["iv"], ref)
        elif record == "OrderBookDepth":
            out.breaches += d.on_depth(value["instrument"], t, self.board.depth_usd[value["instrument"]], ref)
        elif record == "OraclePrice":
            out.breaches += d.on_oracle(value["underlying"], value["source"], t, value["publish_time_ms"],
                                        value["price"], ref)
        elif record == "MarkPrice":
            reference = value.get("index_price") or self.board.index.get(value["underlying"])
            if reference:
                out.breaches += d.on_mark(value["instrument"], t, value["mark_price"], reference,
                                          self._backing_notional(value["instrument"], value["mark_price"]), ref)
        for breach in out.breaches:
            if breach.kind is BreachKind.LIQUIDITY_DROP:
                (self._thin.discard if breach.cleared else self._thin.add)(breach.subject)
            for change in self.circuits.on_breach(breach):
                out.actions.append(self._circuit_action(change))
        if moved is not None:
            for change in self.circuits.on_time(moved, t):
                out.actions.append(self._circuit_action(change))
            for account in self._holders.get(moved, ()):
                self._dirty.setdefault(account, ref)
        return out

    # ------------------------------------------------------------------ revaluation

    def _revalue(self, time_ms: int) -> EngineOutput:
        out = EngineOutput()
        accounts = sorted(a for a in self._dirty if self._valuable(a))
        if not accounts:
            return out
        refs = {a: self._dirty.pop(a) for a in accounts}
        names = sorted({name for a in accounts for name in self.positions[a]})
        table = InstrumentTable.of(_instrument(n) for n in names)
        where = table.index()
        acc_idx, ins_idx, qty, avg = [], [], [], []
        for i, account in enumerate(accounts):
            for name, (q, price) in sorted(self.positions[account].items()):
                acc_idx.append(i)
                ins_idx.append(where[name])
                qty.append(q)
                avg.append(price)
        book = Book.from_arrays(accounts, np.array([self._collateral_usd(a) for a in accounts]), table,
                                np.array(acc_idx, dtype=np.int64), np.array(ins_idx, dtype=np.int64),
                                np.array(qty, dtype=np.float64), np.array(avg, dtype=np.float64))
        market = self.board.market_state(time_ms, set(table.underlyings))
        conditions = self.board.conditions(self._realised_vols())
        risk = revalue_book(book, market, self.params.margin, self.params.adaptive, conditions)
        thin = set(self._thin)
        unreliable = {u for u in table.underlyings if self.detectors.oracle_unreliable(u)}
        marks = dict(zip(table.names, risk.unit.price.tolist()))
        for i, account in enumerate(accounts):
            ratio = float(risk.margin_ratio[i])
            breaches = self.detectors.on_margin(account, time_ms, ratio, refs[account])
            out.breaches += breaches
            view = self._view(account, i, risk, time_ms)
            legs = [CloseIntent(name, name.split("-")[0], -q, marks[name])
                    for name, (q, _) in sorted(self.positions[account].items())]

            def plan(target: float, i: int = i) -> list[CloseIntent]:
                result = plan_liquidation(book, risk, i, target, adaptive=self.params.adaptive, conditions=conditions)
                return [CloseIntent(o.instrument, o.instrument.split("-")[0], o.qty, marks[o.instrument])
                        for o in result.orders]

            decisions = self.ladder.on_revaluation(view, breaches, legs, plan, thin, unreliable)
            out.actions += [self._sign(d) for d in decisions]
            out.exposures.append({
                "account": account, "event_time_ms": time_ms, "equity_usd": float(risk.equity[i]),
                "maintenance_margin_usd": float(risk.maintenance[i]), "initial_margin_usd": float(risk.initial[i]),
                "margin_ratio": ratio, "state": self.ladder.state(account).value,
            })
        return out

    def _valuable(self, account: str) -> bool:
        """Accounts whose every underlying has an index price (others wait for one)."""
        return all(name.split("-")[0] in self.board.index for name in self.positions[account])

    def _view(self, account: str, i: int, risk, time_ms: int) -> AccountView:
        unds = risk.underlyings
        return AccountView(
            account=account, event_time_ms=time_ms, equity=float(risk.equity[i]),
            maintenance=float(risk.maintenance[i]), initial=float(risk.initial[i]),
            margin_ratio=float(risk.margin_ratio[i]),
            delta={u: float(risk.delta[i, k]) for k, u in enumerate(unds)},
            gamma={u: float(risk.gamma[i, k]) for k, u in enumerate(unds)},
            vega={u: float(risk.vega[i, k]) for k, u in enumerate(unds)},
            index={u: self.board.index[u] for u in unds},
            index_velocity={u: self._velocity(u, time_ms) for u in unds},
            hedged=account in self.params.hedged_accounts,
        )

    def _velocity(self, underlying: str, time_ms: int) -> float:
        history = [(t, p) for t, p in self._index_history.get(underlying, ()) if t >= time_ms - VELOCITY_WINDOW_MS]
        if len(history) < 2 or history[-1][0] == history[0][0]:
            return 0.0
        return (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0])

    def _realised_vols(self) -> dict[str, float]:
        vols = {}
        for underlying, history in self._index_history.items():
            if len(history) < 3:
                continue
            times = np.array([t for t, _ in history], dtype=float)
            prices = np.array([p for _, p in history], dtype=float)
            span = times[-1] - times[0]
            if span <= 0:
                continue
            returns = np.diff(np.log(prices))
            vols[underlying] = float(math.sqrt(float(np.sum(returns ** 2)) / span * YEAR_MS))
        return vols

    # ------------------------------------------------------------------ helpers

    def _asset_price(self, asset: str) -> float:
        return 1.0 if asset in STABLE else self.board.index.get(asset, 0.0)

    def _collateral_usd(self, account: str) -> float:
        return sum(amount * self._asset_price(asset) for asset, amount in self.collateral[account].items())

    def _backing_notional(self, instrument: str, mark: float) -> float:
        underlying = instrument.split("-")[0]
        return sum(abs(self.positions[a].get(instrument, (0.0, 0.0))[0]) * mark for a in self._holders.get(underlying, ()))

    def _circuit_action(self, change) -> dict[str, Any]:
        kind = ActionType.HALT if change.state is TradingState.HALTED else ActionType.RESUME
        return make_action(self.key, kind, change.underlying, change.event_time_ms, breach_ids=change.breach_ids,
                           params={"underlying": change.underlying, "level": str(change.level),
                                   "state": change.state.value})

    def _sign(self, decision: Decision) -> dict[str, Any]:
        return make_action(self.key, decision.action_type, decision.account, decision.event_time_ms,
                           instrument=decision.instrument, side=decision.side, quantity=decision.quantity,
                           breach_ids=decision.breach_ids, params=dict(decision.params))
