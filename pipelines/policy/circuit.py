"""Per-underlying circuit breaker with explicit trading states, levels, hysteresis and cooldown.

States (as in NautilusTrader's risk engine): ACTIVE — trading as usual; HALTED — new risk is
rejected, reduce-only exits stay allowed (what users asked for and venues rarely give, see
NautilusTrader #4761); REDUCING — after a halt's cooldown, while the move has not yet eased
below the clear level: still reduce-only, but no longer halted. Levels follow CME's 7 / 13 / 20 %
limit levels (detector side); each level has its own pause, in event time. A resume needs both
the pause to have elapsed and the index-move detector to have cleared: nothing flaps on a
price hovering at a threshold.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Self

from pipelines.detect.breach import Breach, BreachKind

MINUTE_MS = 60_000


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


@dataclasses.dataclass(frozen=True)
class CircuitParams:
    """Pause per level, in ms of event time: 2 min (CME's overnight dynamic breaker pause),
    then 15 min (CME's level-1/2 halts), then 60 min for the deepest level."""

    pause_ms: tuple[int, ...] = (2 * MINUTE_MS, 15 * MINUTE_MS, 60 * MINUTE_MS)


@dataclasses.dataclass(frozen=True)
class CircuitChange:
    """A transition to report as a halt or resume action."""

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
        return self.trading_state(underlying) is TradingState.ACTIVE

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
