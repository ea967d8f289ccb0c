"""The breach a detector reports: what crossed which threshold, over which window, because of
which events — enough for the audit trail to answer "why" without the detector's state."""

from __future__ import annotations

import dataclasses
import hashlib
from enum import StrEnum


class BreachKind(StrEnum):
    MARGIN_SHORTFALL = "margin_shortfall"
    EQUITY_BELOW_LIQUIDATION = "equity_below_liquidation"
    INDEX_MOVE = "index_move"
    IV_JUMP = "iv_jump"
    LIQUIDITY_DROP = "liquidity_drop"
    ORACLE_STALE = "oracle_stale"
    ORACLE_DEVIATION = "oracle_deviation"
    WITHDRAW_THEN_BREACH = "withdraw_then_breach"
    MARK_MANIPULATION = "mark_manipulation"


@dataclasses.dataclass(frozen=True)
class Breach:
    """One threshold breach. ``cleared`` marks the report that the condition has ended."""

    kind: BreachKind
    subject: str
    event_time_ms: int
    value: float
    threshold: float
    window_start_ms: int
    window_end_ms: int
    triggers: tuple[str, ...]
    level: int = 0
    cleared: bool = False

    @property
    def breach_id(self) -> str:
        """Deterministic: the same breach of the same inputs gets the same id on every run,
        so a worker that replays after a crash re-derives ids instead of duplicating breaches."""
        text = "|".join([self.kind.value, self.subject, str(self.event_time_ms), str(self.window_start_ms),
                         str(self.level), "clear" if self.cleared else "fire", ",".join(self.triggers)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]
