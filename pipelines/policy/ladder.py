"""The escalation ladder per account: margin call -> reduce-only -> partial liquidation ->
full liquidation / backstop, with hysteresis on the way back down.

States (NautilusTrader-style explicit trading states, per account):

    NORMAL ──ratio>=call or predicted breach──▶ MARGIN_CALL ──ratio>=reduce──▶ REDUCE_ONLY
       ▲                                                                            │
       └──────────── ratio < release (hysteresis) ◀── LIQUIDATING ◀── margin_shortfall held
                                                          │
                                 equity_below_liquidation ▼
                                                     LIQUIDATED (full liquidation / backstop)

*Predictive* margin call: from the account's Greeks and the index's recent velocity, the
time until equity meets maintenance margin (``time_to_breach_ms``); under ``horizon_ms`` the
call goes out before the ratio itself is high — the point of a backstop is to act early.

Liquidation is *paced*: the share of the account that may be liquidated ramps from
``initial_share`` to 100 % over ``ramp_ms`` of time in distress (Drift), and each round is
capped in notional (dYdX: $100k per subaccount per block; nothing under its $1,000 minimum
liquidation notional), one round per ``round_ms`` (Deribit: about one per second), a round
that finds nothing new to send included. Rounds size the close to bring the account back above
the initial requirement with a buffer (Drift: 2 % over MM) — the caller's ``plan`` function
does the Greek-aware sizing. Liquidations on an underlying whose oracle is unreliable are
suspended (Drift blocks them at 50 % off TWAP), and so are those of an instrument whose mark is
manipulated or that was delisted (``policy.gaming``); where the book is too thin they go to the
backstop liquidity providers instead.

A LIQUIDATED account is closed in full, and escalated round by round until it is: the first
round sends each leg to the book (``full_liquidation``) or, on a thin book, to the LPs
(``transfer_to_lp``); every later round (``round_ms`` on) sends what is still open and not in
flight to ``insurance_fund``, the waterfall from its third step: the fund takes it over at the
bankruptcy price, and what the fund cannot pay is auto-deleveraged.

A hedged account's delta is hedged on its underlying's perpetual, one hedge per ``round_ms``.
A hedge the venue would refuse in the underlying's trading state (``policy.circuit.order_refusal``:
while HALTED or REDUCING, only orders that shrink the position without flipping it) is neither
sent nor counted in flight: it is sent at the first revaluation once the circuit allows it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable, Mapping
from enum import StrEnum
from typing import NamedTuple, TypeVar

import numpy as np

from pipelines.detect.breach import Breach, BreachKind
from pipelines.errors import UserError
from pipelines.policy.actions import ActionType
from pipelines.policy.circuit import TradingState, order_refusal, reduces_position
from pipelines.risk.instruments import perpetual_of


class AccountState(StrEnum):
    NORMAL = "normal"
    MARGIN_CALL = "margin_call"
    REDUCE_ONLY = "reduce_only"
    LIQUIDATING = "liquidating"
    LIQUIDATED = "liquidated"


STATES = tuple(AccountState)  # a state's code (``Ladder.code``) is its index here
STATE_CODE = {state: code for code, state in enumerate(STATES)}


@dataclasses.dataclass(frozen=True)
class LadderParams:
    call_ratio: float = 0.80
    reduce_ratio: float = 0.90
    release_ratio: float = 0.70
    horizon_ms: int = 5 * 60_000
    initial_share: float = 0.20
    ramp_ms: int = 60_000
    round_ms: int = 1_000
    round_notional_usd: float = 100_000.0
    min_notional_usd: float = 1_000.0
    buffer: float = 0.02
    hedge_threshold_usd: float = 50_000.0

    def __post_init__(self) -> None:
        """Every parameter a finite number >= 0, and ``ramp_ms`` > 0 (the share of a round divides
        by it): a UserError naming the first that is not."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise UserError(f"ladder parameter {f.name}: expected a finite non-negative number, got {value!r}")
        if self.ramp_ms <= 0:
            raise UserError(f"ladder parameter ramp_ms: must be positive, got {self.ramp_ms!r}")


@dataclasses.dataclass(frozen=True)
class AccountView:
    """One revaluation of one account, as the ladder needs it."""

    account: str
    event_time_ms: int
    equity: float
    maintenance: float
    initial: float
    margin_ratio: float
    delta: dict[str, float]  # per underlying, in underlying units
    gamma: dict[str, float]
    vega: dict[str, float]  # USD per vol point
    index: dict[str, float]
    index_velocity: dict[str, float]  # USD per ms, from the recent index window
    hedged: bool = False
    time_to_breach_ms: float | None = None  # precomputed by a batch caller; None: from the Greeks here


# a leg of a plan as ``_round_orders`` reads it: (instrument, underlying, qty, mark); a ``CloseIntent`` is one.
# A type variable, not an alias: the orders give back the caller's legs, ``CloseIntent`` to ``_round``
Leg = TypeVar("Leg", bound=tuple[str, str, float, float])


class CloseIntent(NamedTuple):
    """A leg to close: signed quantity to trade (opposite to the position), with its mark. A
    named tuple: the engine makes one per leg of every account it visits, every tick."""

    instrument: str
    underlying: str
    qty: float
    mark: float


@dataclasses.dataclass(frozen=True)
class Decision:
    """An action to emit, before signing: the engine turns it into an ``Action`` record."""

    action_type: ActionType
    account: str
    event_time_ms: int
    breach_ids: tuple[str, ...]
    instrument: str | None = None
    side: str | None = None
    quantity: float = 0.0
    params: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class _Ladder:
    state: AccountState = AccountState.NORMAL
    distress_since_ms: int | None = None
    last_round_ms: int | None = None
    breach_ids: tuple[str, ...] = ()
    last_hedge_ms: int | None = None
    in_flight: dict[str, float] = dataclasses.field(default_factory=dict)  # instrument -> signed qty sent


def times_to_breach_ms(slack: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Projected time until equity meets maintenance margin if the index keeps its velocity:
    the smallest positive root of  slack + b t + a t^2 = 0, where ``slack`` = equity - MM,
    ``b`` = sum of delta * velocity and ``a`` = sum of gamma * velocity^2 / 2 over underlyings;
    0 when already breached, inf when the account is not losing. Vectorised, because the
    engine screens every revalued account with it before any per-account Python runs."""
    slack, a, b = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (slack, a, b)))
    out = np.full(slack.shape, np.inf)
    with np.errstate(all="ignore"):  # inf and nan branches are masked out below
        linear = np.abs(a) < 1e-18
        out = np.where(linear & (b < 0), slack / -b, out)
        disc = b * b - 4 * a * slack
        # the cancellation-free form of the two roots (a tiny gamma must not swamp the delta term)
        q = -0.5 * (b + np.copysign(np.sqrt(np.where(disc >= 0, disc, 0.0)), b))
        r1, r2 = q / a, slack / q
        quadratic = np.where(r1 > 0, np.where(r2 > 0, np.minimum(r1, r2), r1), np.where(r2 > 0, r2, np.inf))
        out = np.where(~linear & (disc >= 0), quadratic, out)
    return np.where(slack <= 0, 0.0, out)


def time_to_breach_ms(view: AccountView) -> float:
    """``times_to_breach_ms`` for one account view."""
    a = sum(0.5 * view.gamma.get(u, 0.0) * v * v for u, v in view.index_velocity.items())
    b = sum(view.delta.get(u, 0.0) * v for u, v in view.index_velocity.items())
    return float(times_to_breach_ms(np.array(view.equity - view.maintenance), np.array(a), np.array(b)))


class Ladder:
    def __init__(self, params: LadderParams | None = None) -> None:
        self.params = params or LadderParams()
        self._accounts: dict[str, _Ladder] = {}

    def state(self, account: str) -> AccountState:
        ladder = self._accounts.get(account)
        return ladder.state if ladder else AccountState.NORMAL

    def accounts(self) -> set[str]:
        """Every account the ladder holds a state for (one released holds a NORMAL one)."""
        return set(self._accounts)

    def account_state(self, account: str) -> dict | None:
        """``account``'s ladder as plain data (``LadderAccountState``); None when it holds none."""
        ladder = self._accounts.get(account)
        if ladder is None:
            return None
        return {"state": ladder.state.value, "distress_since_ms": ladder.distress_since_ms,
                "last_round_ms": ladder.last_round_ms, "breach_ids": list(ladder.breach_ids),
                "last_hedge_ms": ladder.last_hedge_ms, "in_flight": dict(ladder.in_flight)}

    def restore_account(self, account: str, state: dict) -> None:
        """Hold for ``account`` the ladder ``account_state`` gave, in place of its own."""
        self._accounts[account] = _Ladder(AccountState(state["state"]), state["distress_since_ms"],
                                          state["last_round_ms"], tuple(state["breach_ids"]),
                                          state["last_hedge_ms"], dict(state["in_flight"]))

    def drop_account(self, account: str) -> None:
        self._accounts.pop(account, None)

    def on_position_update(self, account: str, instrument: str) -> None:
        """A new position for the leg: whatever was in flight on it is now reflected in it."""
        ladder = self._accounts.get(account)
        if ladder is not None:
            ladder.in_flight.pop(instrument, None)

    def code(self, account: str, closes: Iterable[tuple[str, str, float]],
             unreliable: Collection[str]) -> tuple[int, float, bool, float, bool]:
        """What ``unmoved``, ``round_only`` and ``hedge_waits`` read of an account: its state as an
        index into ``STATES``, its last round's time (NaN: none, or no ladder held), whether its
        closes wait (``closes_wait``, False where no ladder is held), its last hedge's time
        (NaN: none sent, or no ladder held) and whether a ladder is held."""
        ladder = self._accounts.get(account)
        if ladder is None:
            return 0, math.nan, False, math.nan, False
        return (STATE_CODE[ladder.state], math.nan if ladder.last_round_ms is None else ladder.last_round_ms,
                _closes_wait(ladder, closes, unreliable),
                math.nan if ladder.last_hedge_ms is None else ladder.last_hedge_ms, True)

    def closes_wait(self, account: str, closes: Iterable[tuple[str, str, float]], unreliable: Collection[str]) -> bool:
        """Whether every leg of ``account`` (``closes``: instrument, underlying and the quantity
        that closes it, the position negated) has its close in flight in full or waits on
        ``unreliable`` (``on_revaluation``'s: underlyings and instruments), so that a liquidated
        round would send nothing (``_liquidated_round``); False where no ladder is held. It
        changes with the ladder's closes in flight and with ``unreliable``."""
        ladder = self._accounts.get(account)
        return ladder is not None and _closes_wait(ladder, closes, unreliable)

    def round_code(self, account: str, instruments: Iterable[str]) -> tuple[float, list[float]]:
        """What a liquidating round's check reads of ``account`` besides the plan
        (``kernels.planner.RoundCheck``): its distress start (NaN: none, or no ladder held) and
        per instrument of ``instruments`` its quantity in flight (0.0: none). Only
        ``on_revaluation``, ``on_position_update``, ``restore_account`` and ``drop_account``
        change them."""
        ladder = self._accounts.get(account)
        if ladder is None:
            return math.nan, [0.0 for _ in instruments]
        in_flight, since = ladder.in_flight, ladder.distress_since_ms
        return math.nan if since is None else since, [in_flight.get(name, 0.0) for name in instruments]

    def hedges_in_flight(self, account: str, underlyings: Iterable[str]) -> list[float]:
        """Per underlying, the hedge in flight on its perpetual (0 where none, or no ladder held):
        what ``hedge_waits`` reads with ``code``."""
        ladder = self._accounts.get(account)
        if ladder is None:
            return [0.0 for _ in underlyings]
        in_flight = ladder.in_flight
        return [in_flight.get(perpetual_of(u), 0.0) for u in underlyings]

    def unmoved(self, state: np.ndarray, last_round_ms: np.ndarray, held: np.ndarray, ratio: np.ndarray,
                ttb: np.ndarray, maintenance: np.ndarray, initial: np.ndarray, time_ms: int) -> np.ndarray:
        """Per account (``code``, and its revaluation at ``time_ms``), whether ``on_revaluation``
        with no breach, leaving its hedge aside (``hedge_waits``), would return nothing and
        change nothing: in MARGIN_CALL below ``reduce_ratio`` or in REDUCE_ONLY, and not
        released; in LIQUIDATING or LIQUIDATED, no round due and not released; NORMAL with its
        ladder held, below ``call_ratio`` and ``reduce_ratio`` and its projected breach past the
        horizon. False where it might act (NORMAL with no ladder held included:
        ``on_revaluation`` makes it). Vectorised, so that a crash's many accounts in distress
        skip the per-account Python while nothing changes for them."""
        p = self.params
        target = self.target_ratios(maintenance, initial)
        with np.errstate(invalid="ignore"):
            below_release = ratio < p.release_ratio
            due = np.isnan(last_round_ms) | (time_ms - last_round_ms >= p.round_ms)
            called = ~(below_release & (ttb >= p.horizon_ms))  # not released out of a call or reduce-only
            calm = ~(ratio >= p.call_ratio) & ~(ratio >= p.reduce_ratio) & (ttb >= p.horizon_ms)
            return (((state == STATE_CODE[AccountState.MARGIN_CALL]) & (ratio < p.reduce_ratio) & called)
                    | ((state == STATE_CODE[AccountState.REDUCE_ONLY]) & called)
                    | ((state == STATE_CODE[AccountState.LIQUIDATING]) & ~due & ~below_release & ~(ratio < target))
                    | ((state == STATE_CODE[AccountState.LIQUIDATED]) & ~due & ~below_release)
                    | ((state == STATE_CODE[AccountState.NORMAL]) & (held != 0) & calm))

    def hedge_waits(self, state: np.ndarray, last_hedge_ms: np.ndarray, delta: np.ndarray, in_flight: np.ndarray,
                    held: np.ndarray, allowed: np.ndarray, index: np.ndarray, time_ms: int) -> np.ndarray:
        """Per hedged account (``code``; ``delta``, ``in_flight`` from ``hedges_in_flight`` and
        ``held``, the position in the perpetual, by account and underlying; ``allowed``, whether
        the underlying's trading state lets risk increase, and ``index`` by underlying), whether
        ``on_revaluation`` at ``time_ms`` would send no hedge and change nothing for hedging: it
        is LIQUIDATING or LIQUIDATED (never hedged), its last hedge went out within
        ``round_ms``, or no underlying's hedge (its delta less what is in flight) both reaches
        ``hedge_threshold_usd`` at the index and is accepted in its state (``order_refusal``:
        only reducing orders where risk may not increase) (``_hedge``). Where it holds, the
        account is left alone wherever ``unmoved`` or ``round_only`` would leave it alone
        unhedged."""
        p = self.params
        with np.errstate(invalid="ignore"):
            trade = -delta - in_flight
            reduces = (held * trade < 0) & (np.abs(trade) <= np.abs(held) + 1e-12)  # circuit.reduces_position
            sent = (np.abs(trade) * index >= p.hedge_threshold_usd) & (allowed | reduces)
            return ((state >= STATE_CODE[AccountState.LIQUIDATING]) | (time_ms - last_hedge_ms < p.round_ms)
                    | ~sent.any(axis=1))

    def round_only(self, state: np.ndarray, last_round_ms: np.ndarray, ratio: np.ndarray, in_flight: np.ndarray,
                   time_ms: int) -> np.ndarray:
        """Per account (``code``, with whether its closes wait, and its ratio at ``time_ms``),
        whether ``on_revaluation`` with no breach and the ``unreliable`` set ``code`` was read
        with would only mark a round at ``time_ms`` (``mark_rounds``): LIQUIDATED, a round due,
        not released, and every close in flight or waiting on an unreliable underlying or
        instrument. In a crash replayed without fills, these are most of the accounts in
        distress, once every ``round_ms``."""
        p = self.params
        with np.errstate(invalid="ignore"):
            due = np.isnan(last_round_ms) | (time_ms - last_round_ms >= p.round_ms)
            return (state == STATE_CODE[AccountState.LIQUIDATED]) & due & ~(ratio < p.release_ratio) & in_flight

    def round_due(self, state: np.ndarray, last_round_ms: np.ndarray, ratio: np.ndarray, maintenance: np.ndarray,
                  initial: np.ndarray, time_ms: int) -> np.ndarray:
        """Per account (``code``, and its revaluation at ``time_ms``), whether ``on_revaluation``
        with no breach would run a LIQUIDATING round: LIQUIDATING, a round due, not released
        (ratio neither under the target nor under ``release_ratio``). What such a round sends
        depends on the plan made at this tick: where ``round_orders`` gives nothing for it,
        ``on_revaluation`` only marks the round (``mark_rounds``)."""
        p = self.params
        target = self.target_ratios(maintenance, initial)
        with np.errstate(invalid="ignore"):
            due = np.isnan(last_round_ms) | (time_ms - last_round_ms >= p.round_ms)
            return ((state == STATE_CODE[AccountState.LIQUIDATING]) & due & ~(ratio < p.release_ratio)
                    & ~(ratio < target))

    def mark_rounds(self, accounts: Iterable[str], time_ms: int) -> None:
        """What ``on_revaluation`` does for the accounts ``round_only`` holds, and for those
        ``round_due`` holds whose round sends nothing: a round at ``time_ms``."""
        for account in accounts:
            self._accounts[account].last_round_ms = time_ms

    def target_ratio(self, view: AccountView) -> float:
        """MM / equity at which equity covers the initial requirement plus the buffer."""
        return self.target_ratio_of(view.maintenance, view.initial)

    def target_ratio_of(self, maintenance: float, initial: float) -> float:
        if initial <= 0:
            return 1.0
        return (maintenance / initial) / (1.0 + self.params.buffer)

    def target_ratios(self, maintenance: np.ndarray, initial: np.ndarray) -> np.ndarray:
        """``target_ratio_of`` elementwise, to the bit (the same two divisions)."""
        with np.errstate(all="ignore"):
            return np.where(initial <= 0, 1.0, (maintenance / initial) / (1.0 + self.params.buffer))

    def may_round(self, account: str, ratio: float, event_time_ms: int, shortfall_ratio: float) -> bool:
        """Whether a revaluation at ``ratio`` could run a liquidation round for ``account``: it is
        liquidating, or a margin shortfall (at ``shortfall_ratio``) could start one, and no round
        ran within ``round_ms``. A hint for planning many accounts together before the ladder
        runs, and only a hint: a wrong answer costs time, never a different action, because
        every account the hint leaves unplanned is planned alone where its round runs — by its
        visit, and for an account whose round ``round_due`` finds due, by the visit the engine
        gives every such account with a finite target and no plan (``Engine._rounds_send``
        reads only a plan it has as the round's orders, never a missing one as no orders)."""
        ladder = self._accounts.get(account)
        if ladder is None:
            return ratio >= shortfall_ratio
        if ladder.state is AccountState.LIQUIDATED or not (ladder.state is AccountState.LIQUIDATING
                                                           or ratio >= shortfall_ratio):
            return False
        return ladder.last_round_ms is None or event_time_ms - ladder.last_round_ms >= self.params.round_ms

    def on_revaluation(self, view: AccountView, breaches: list[Breach], positions: list[CloseIntent],
                       plan, thin: set[str], unreliable: Collection[str],
                       trading: Mapping[str, TradingState] | None = None) -> list[Decision]:
        """One revaluation with the breaches it caused. ``positions``: the account's legs as
        intents to close them fully; ``plan(target_ratio)`` the Greek-aware close orders
        (``CloseIntent`` list) to reach a ratio; ``thin``: instruments whose book is in a
        liquidity breach; ``unreliable``: underlyings whose oracle is unreliable and instruments
        whose mark is manipulated or that were delisted: their legs wait; ``trading``: the
        circuit's state per underlying (ACTIVE where absent), which hedges must respect."""
        p = self.params
        ladder = self._accounts.setdefault(view.account, _Ladder())
        fired = {b.kind: b for b in breaches if not b.cleared}
        ladder.breach_ids = tuple(dict.fromkeys(ladder.breach_ids + tuple(b.breach_id for b in fired.values())))
        out: list[Decision] = []
        t, ratio = view.event_time_ms, view.margin_ratio

        if BreachKind.EQUITY_BELOW_LIQUIDATION in fired and ladder.state is not AccountState.LIQUIDATED:
            ladder.state = AccountState.LIQUIDATED
            return self._liquidated_round(view, ladder, positions, thin, unreliable, first=True)

        if ladder.state is AccountState.LIQUIDATED:
            if ratio < p.release_ratio and positions == []:
                self._accounts[view.account] = _Ladder()
            elif ladder.last_round_ms is None or t - ladder.last_round_ms >= p.round_ms:
                out += self._liquidated_round(view, ladder, positions, thin, unreliable, first=False)
            return out

        if BreachKind.MARGIN_SHORTFALL in fired and ladder.state is not AccountState.LIQUIDATING:
            ladder.state = AccountState.LIQUIDATING
            ladder.distress_since_ms = t if ladder.distress_since_ms is None else ladder.distress_since_ms
        if ladder.state is AccountState.LIQUIDATING:
            if ratio < self.target_ratio(view) or ratio < p.release_ratio:
                self._release(ladder)
                return out
            if ladder.last_round_ms is None or t - ladder.last_round_ms >= p.round_ms:
                out += self._round(view, ladder, plan, thin, unreliable)
            return out

        ttb = time_to_breach_ms(view) if view.time_to_breach_ms is None else view.time_to_breach_ms
        if ratio >= p.reduce_ratio and ladder.state is not AccountState.REDUCE_ONLY:
            ladder.state = AccountState.REDUCE_ONLY
            ladder.distress_since_ms = t if ladder.distress_since_ms is None else ladder.distress_since_ms
            out.append(Decision(ActionType.REDUCE_ONLY, view.account, t, ladder.breach_ids,
                                params=(("margin_ratio", f"{ratio:.6f}"),)))
        elif ladder.state is AccountState.NORMAL:
            if ratio >= p.call_ratio or ttb < p.horizon_ms:
                ladder.state = AccountState.MARGIN_CALL
                ladder.distress_since_ms = t if ladder.distress_since_ms is None else ladder.distress_since_ms
                out.append(Decision(ActionType.MARGIN_CALL, view.account, t, ladder.breach_ids,
                                    params=(("margin_ratio", f"{ratio:.6f}"),
                                            ("time_to_breach_ms", "inf" if math.isinf(ttb) else str(int(ttb))),
                                            ("predictive", "true" if ratio < p.call_ratio else "false"))))
        elif ratio < p.release_ratio and ttb >= p.horizon_ms:
            self._release(ladder)
        if view.hedged:
            held = {leg.instrument: -leg.qty for leg in positions}
            out += self._hedge(view, ladder, held, trading or {})
        return out

    def _release(self, ladder: _Ladder) -> None:
        ladder.state = AccountState.NORMAL
        ladder.distress_since_ms = ladder.last_round_ms = None
        ladder.breach_ids = ()

    def _round(self, view: AccountView, ladder: _Ladder, plan, thin: set[str],
               unreliable: Collection[str]) -> list[Decision]:
        """One paced liquidation round: the orders ``_round_orders`` gives for the plan, sent and
        put in flight; a round that sends nothing (earlier rounds' orders cover the plan, the
        rest is under the minimum notional) is still the round: the next one is ``round_ms``
        on, not the next tick."""
        t = view.event_time_ms
        out = []
        for leg, qty, kind in _round_orders(self.params, ladder, plan(self.target_ratio(view)), t, thin, unreliable):
            out.append(self._close(kind, view, leg, qty, ladder))
            ladder.in_flight[leg.instrument] = ladder.in_flight.get(leg.instrument, 0.0) + qty
        ladder.last_round_ms = t
        return out

    def round_orders(self, account: str, legs: Iterable[Leg], time_ms: int, thin: Collection[str],
                     unreliable: Collection[str]) -> list[tuple[Leg, float, ActionType]]:
        """What a LIQUIDATING ``account``'s round at ``time_ms`` would send for the plan ``legs``
        (``_round_orders``), changing nothing: where it is empty and ``round_due`` holds,
        ``on_revaluation`` with no breach only marks the round (``mark_rounds``). ``legs`` may
        be plain ``Leg`` tuples."""
        return _round_orders(self.params, self._accounts[account], legs, time_ms, thin, unreliable)

    def _liquidated_round(self, view: AccountView, ladder: _Ladder, positions: list[CloseIntent], thin: set[str],
                          unreliable: Collection[str], *, first: bool) -> list[Decision]:
        """One round of a liquidated account's full close: every leg's quantity that is neither
        closed nor in flight (sent, and not yet in a position update). The first round sends it
        to the book (``full_liquidation``: the whole waterfall) or, where the book is thin, to the
        backstop LPs (``transfer_to_lp``). A later round, ``round_ms`` on, finds there only what
        that round left unfilled, and escalates it to ``insurance_fund``: the waterfall from step
        3, where the fund takes it over at the bankruptcy price and what the fund cannot pay is
        auto-deleveraged. Legs ``unreliable`` names (``on_revaluation``) wait."""
        out = []
        for leg in positions:
            if leg.underlying in unreliable or leg.instrument in unreliable:
                continue
            remaining = _unsent(ladder, leg.instrument, leg.qty)
            if remaining is None:
                continue
            if not first:
                kind = ActionType.INSURANCE_FUND
            elif leg.instrument in thin:
                kind = ActionType.TRANSFER_TO_LP
            else:
                kind = ActionType.FULL_LIQUIDATION
            out.append(self._close(kind, view, leg, remaining, ladder))
            ladder.in_flight[leg.instrument] = leg.qty
        ladder.last_round_ms = view.event_time_ms
        return out

    def _close(self, kind: ActionType, view: AccountView, leg: CloseIntent, qty: float, ladder: _Ladder) -> Decision:
        side = "buy" if qty > 0 else "sell"
        return Decision(kind, view.account, view.event_time_ms, ladder.breach_ids, instrument=leg.instrument,
                        side=side, quantity=abs(qty),
                        params=(("mark", repr(leg.mark)), ("equity_usd", repr(view.equity)),
                                ("margin_ratio", f"{view.margin_ratio:.6f}")))

    def _hedge(self, view: AccountView, ladder: _Ladder, held: Mapping[str, float],
               trading: Mapping[str, TradingState]) -> list[Decision]:
        """Each underlying's delta hedged on its perpetual, less what is in flight; ``held``: the
        account's position per instrument. A hedge ``order_refusal`` refuses in the underlying's
        state in ``trading`` is not sent and not put in flight."""
        p = self.params
        if ladder.last_hedge_ms is not None and view.event_time_ms - ladder.last_hedge_ms < p.round_ms:
            return []
        out = []
        for underlying, delta in sorted(view.delta.items()):
            perpetual = perpetual_of(underlying)
            sent = ladder.in_flight.get(perpetual, 0.0)
            trade = -delta - sent  # what still needs hedging once earlier hedges show in the position
            state = trading.get(underlying, TradingState.ACTIVE)
            refused = order_refusal(state, perpetual, reduces_position(held.get(perpetual, 0.0), trade))
            if refused is None and abs(trade) * view.index.get(underlying, 0.0) >= p.hedge_threshold_usd:
                out.append(Decision(ActionType.DELTA_HEDGE, view.account, view.event_time_ms, ladder.breach_ids,
                                    instrument=perpetual, side="buy" if trade > 0 else "sell",
                                    quantity=abs(trade), params=(("delta", repr(delta)),)))
                ladder.in_flight[perpetual] = sent + trade
        if out:
            ladder.last_hedge_ms = view.event_time_ms
        return out


def _round_orders(p: LadderParams, ladder: _Ladder, legs: Iterable[Leg], time_ms: int,
                  thin: Collection[str], unreliable: Collection[str]) -> list[tuple[Leg, float, ActionType]]:
    """The orders of one paced liquidation round, as ``(leg, qty, kind)``, changing nothing: each
    plan leg's quantity within the ramped share (``initial_share`` to 100 % over ``ramp_ms`` of
    distress), less what earlier rounds sent and the position does not show yet (an order
    counts as in flight for the legs after it), within the round's notional budget, none
    under ``min_notional_usd``, none on an ``unreliable`` underlying or instrument; ``kind``:
    to the LPs where the instrument is ``thin``, else a partial liquidation. ``legs`` are read
    as ``(instrument, underlying, qty, mark)``."""
    elapsed = 0 if ladder.distress_since_ms is None else time_ms - ladder.distress_since_ms
    share = min(1.0, p.initial_share + elapsed / p.ramp_ms)
    budget = p.round_notional_usd
    in_flight = ladder.in_flight
    placed: dict[str, float] = {}  # what this round's orders put in flight
    out = []
    for leg in legs:
        instrument, underlying, planned, mark = leg
        if underlying in unreliable or instrument in unreliable:
            continue
        sent = placed[instrument] if instrument in placed else in_flight.get(instrument, 0.0)
        qty = planned * share - sent if planned * (planned * share - sent) > 0 else 0.0
        notional = abs(qty) * mark
        if notional > budget:
            qty *= budget / notional
            notional = budget
        if notional < p.min_notional_usd:
            continue
        kind = ActionType.TRANSFER_TO_LP if instrument in thin else ActionType.PARTIAL_LIQUIDATION
        out.append((leg, qty, kind))
        placed[instrument] = sent + qty
        budget -= notional
        if budget <= 0:
            break
    return out


def _closes_wait(ladder: _Ladder, closes: Iterable[tuple[str, str, float]], unreliable: Collection[str]) -> bool:
    """``Ladder.closes_wait`` for a held ladder."""
    return all(underlying in unreliable or name in unreliable or _unsent(ladder, name, qty) is None
               for name, underlying, qty in closes)


def _unsent(ladder: _Ladder, instrument: str, qty: float) -> float | None:
    """What of closing a leg by ``qty`` is not in flight yet; None when the quantity in flight
    covers it (or has gone past it)."""
    remaining = qty - ladder.in_flight.get(instrument, 0.0)
    return None if remaining * qty <= 0 else remaining
