"""Per-underlying circuit breaker with explicit trading states, levels, hysteresis and cooldown.

States (as in NautilusTrader's risk engine): ACTIVE — trading as usual; HALTED — new risk is
rejected, reduce-only exits stay allowed (what users asked for and venues rarely give, see
NautilusTrader #4761); REDUCING — after a halt's cooldown, while the move has not yet eased
below the clear level: still reduce-only, but no longer halted. Levels follow CME's 7 / 13 / 20 %
limit levels (detector side); each level has its own pause, in event time. A resume needs both
the pause to have elapsed and the index-move detector to have cleared: nothing flaps on a
price hovering at a threshold.

Each state is carried to the venue by its own market-wide action (``CIRCUIT_ACTIONS``): ``halt``,
``market_reduce_only``, ``resume``, keyed by the underlying. The venue enforces them with
``order_refusal``: in HALTED and REDUCING an order is accepted only if it reduces a position
without flipping it; in ACTIVE every order is accepted. The two restricted states refuse the same
orders; they differ in what ends them (a halt: its pause; the reduce-only period: the move
clearing) and in the reason a refusal gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from enum import StrEnum
from typing import Self

from pipelines.detect.breach import Breach, BreachKind
from pipelines.policy.actions import ActionType

MINUTE_MS = 60_000


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def allows_risk_increase(self) -> bool:
        return self is TradingState.ACTIVE


CIRCUIT_ACTIONS: dict[TradingState, ActionType] = {
    TradingState.HALTED: ActionType.HALT,
    TradingState.REDUCING: ActionType.MARKET_REDUCE_ONLY,
    TradingState.ACTIVE: ActionType.RESUME,
}
"""The market-wide action that puts an underlying's venue in each state."""
STATE_OF_ACTION: dict[ActionType, TradingState] = {action: state for state, action in CIRCUIT_ACTIONS.items()}


STRICTNESS: dict[TradingState, int] = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
"""How restrictive each state is: HALTED over REDUCING over ACTIVE."""


def strictest(states: Iterable[TradingState]) -> TradingState:
    """The most restrictive of ``states`` (``STRICTNESS``; ACTIVE for none). A venue judges an
    instrument's orders by the stricter of its own state and its underlying's."""
    return max(states, key=STRICTNESS.__getitem__, default=TradingState.ACTIVE)


def reduces_position(held: float, signed: float) -> bool:
    """Whether trading ``signed`` contracts (buy > 0) against a position of ``held`` only shrinks
    it, never flipping it: the ``reduces`` of ``order_refusal``."""
    return held * signed < 0 and abs(signed) <= abs(held) + 1e-12


def order_refusal(state: TradingState, market: str, reduces: bool) -> str | None:
    """Why the venue refuses an order on ``market`` (an instrument or underlying) in ``state``, or
    None when it accepts it. ``reduces``: the order only shrinks the account's position in the
    instrument (it never flips it). ACTIVE accepts every order; HALTED and REDUCING only reducing ones."""
    if state.allows_risk_increase or reduces:
        return None
    if state is TradingState.HALTED:
        return f"{market} halted: only orders that reduce a position are accepted"
    return f"{market} reduce-only after a halt: the order would increase the position"


@dataclasses.dataclass(frozen=True)
class CircuitParams:
    """Pause per level, in ms of event time: 2 min (CME's overnight dynamic breaker pause),
    then 15 min (CME's level-1/2 halts), then 60 min for the deepest level."""

    pause_ms: tuple[int, ...] = (2 * MINUTE_MS, 15 * MINUTE_MS, 60 * MINUTE_MS)


@dataclasses.dataclass(frozen=True)
class CircuitChange:
    """A transition to report as the market-wide action of its ``state`` (``CIRCUIT_ACTIONS``)."""

    underlying: str
    event_time_ms: int
    state: TradingState
    level: int
    breach_ids: tuple[str, ...]


@dataclasses.dataclass
class _Circuit:
    state: TradingState = TradingState.ACTIVE
    level: int = 0
    halted_until_ms: int = 0
    move_cleared: bool = True
    breach_ids: tuple[str, ...] = ()


class CircuitBreakers:
    def __init__(self, params: CircuitParams | None = None) -> None:
        self.params = params or CircuitParams()
        self._circuits: dict[str, _Circuit] = {}

    def trading_state(self, underlying: str) -> TradingState:
        circuit = self._circuits.get(underlying)
        return circuit.state if circuit else TradingState.ACTIVE

    def state(self) -> dict:
        """Every circuit as plain data (``CircuitBreakersState``), for ``from_state``."""
        return {"circuits": {u: {"state": c.state.value, "level": c.level, "halted_until_ms": c.halted_until_ms,
                                 "move_cleared": c.move_cleared, "breach_ids": list(c.breach_ids)}
                             for u, c in self._circuits.items()}}

    @classmethod
    def from_state(cls, state: dict, params: CircuitParams | None = None) -> Self:
        """Circuit breakers holding what ``state()`` gave, with ``params`` (not part of the state)."""
        breakers = cls(params)
        breakers._circuits = {u: _Circuit(TradingState(c["state"]), c["level"], c["halted_until_ms"], c["move_cleared"],
                                          tuple(c["breach_ids"])) for u, c in state["circuits"].items()}
        return breakers

    def allows_risk_increase(self, underlying: str) -> bool:
        return self.trading_state(underlying).allows_risk_increase

    def on_breach(self, breach: Breach) -> list[CircuitChange]:
        """Index-move breaches (fire: a level reached; clear: the move eased) drive the state."""
        if breach.kind is not BreachKind.INDEX_MOVE:
            return []
        circuit = self._circuits.setdefault(breach.subject, _Circuit())
        if breach.cleared:
            circuit.move_cleared = True
            return self.on_time(breach.subject, breach.event_time_ms)
        circuit.move_cleared = False
        if breach.level <= circuit.level and circuit.state is TradingState.HALTED:
            return []
        pause = self.params.pause_ms[min(breach.level, len(self.params.pause_ms)) - 1]
        circuit.level = max(circuit.level, breach.level)
        circuit.halted_until_ms = max(circuit.halted_until_ms, breach.event_time_ms + pause)
        circuit.breach_ids = circuit.breach_ids + (breach.breach_id,)
        circuit.state = TradingState.HALTED
        return [CircuitChange(breach.subject, breach.event_time_ms, TradingState.HALTED, circuit.level,
                              circuit.breach_ids)]

    def on_time(self, underlying: str, event_time_ms: int) -> list[CircuitChange]:
        """Advance an underlying's circuit to ``event_time_ms`` (called on its market events)."""
        circuit = self._circuits.get(underlying)
        if circuit is None or circuit.state is TradingState.ACTIVE or event_time_ms < circuit.halted_until_ms:
            return []
        new_state = TradingState.ACTIVE if circuit.move_cleared else TradingState.REDUCING
        if new_state is circuit.state:
            return []
        circuit.state = new_state
        change = CircuitChange(underlying, event_time_ms, new_state, circuit.level, circuit.breach_ids)
        if new_state is TradingState.ACTIVE:
            circuit.level, circuit.breach_ids = 0, ()
        return [change]
