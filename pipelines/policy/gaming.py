"""Consequences of the anti-gaming breaches.

- **Withdraw-then-liquidate** (``WITHDRAW_THEN_BREACH``: collateral withdrawn shortly before a
  margin breach, the March 2025 Hyperliquid ETH whale): the account's withdrawals are frozen at
  the venue and its margin add-on raised: maintenance and initial margin × (1 + ``add_on``) from
  its next revaluation on. The default doubles the requirement, as Hyperliquid did for large ETH
  positions after that incident (maximum leverage 50x → 25x). Both hold until an operator lifts
  them; the engine never does.
- **Mark manipulation** (``MARK_MANIPULATION``: a mark far off its index, or a thin-book pump):
  the instrument is delisted: halted at the venue and every position in it settled at its price
  before the manipulation (``Detectors.manipulated``), as Hyperliquid's validators did with
  JELLY on 26 March 2025 (settled at $0.0095, the price the position was opened at). While a
  mark-off-index breach fires the ladder liquidates nothing in the instrument (a liquidation at
  the manipulated price is what the manipulation is for); a pump's instrument, once delisted,
  never again (``Detectors.delist``). Other instruments of the underlying are not blocked.

A penalty is plain data per account (``account_state``), carried in the engine's snapshots.
"""

from __future__ import annotations

import dataclasses

from pipelines.detect.breach import Breach, BreachKind
from pipelines.policy.actions import ActionType
from pipelines.policy.ladder import Decision


@dataclasses.dataclass(frozen=True)
class GamingParams:
    add_on: float = 1.0  # margin × (1 + add_on) once withdrawals are frozen


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A withdraw-then-liquidate account's frozen withdrawals and margin add-on."""

    since_ms: int
    add_on: float
    breach_ids: tuple[str, ...]


class Penalties:
    """Per account, the penalty a withdraw-then-liquidate breach imposed (at most one)."""

    def __init__(self, params: GamingParams | None = None) -> None:
        self.params = params or GamingParams()
        self._accounts: dict[str, Penalty] = {}

    def on_breaches(self, account: str, breaches: list[Breach]) -> list[Decision]:
        """The first fired ``WITHDRAW_THEN_BREACH`` of an account not yet penalised freezes its
        withdrawals and raises its add-on: one ``freeze_withdrawals`` action. Later ones change nothing."""
        if account in self._accounts:
            return []
        fired = [b for b in breaches if b.kind is BreachKind.WITHDRAW_THEN_BREACH and not b.cleared]
        if not fired:
            return []
        breach = fired[0]
        penalty = self._accounts[account] = Penalty(breach.event_time_ms, self.params.add_on, (breach.breach_id,))
        return [Decision(ActionType.FREEZE_WITHDRAWALS, account, breach.event_time_ms, penalty.breach_ids,
                         params=(("add_on", repr(penalty.add_on)), ("withdrawn_usd", repr(breach.value)),
                                 ("reason", "withdraw_then_breach")))]

    def add_ons(self) -> dict[str, float]:
        """Every penalised account's add-on."""
        return {account: penalty.add_on for account, penalty in self._accounts.items()}

    def accounts(self) -> set[str]:
        return set(self._accounts)

    def account_state(self, account: str) -> dict | None:
        """``account``'s penalty as plain data (``PenaltyState``); None when it has none."""
        penalty = self._accounts.get(account)
        if penalty is None:
            return None
        return {"since_ms": penalty.since_ms, "add_on": penalty.add_on, "breach_ids": list(penalty.breach_ids)}

    def restore_account(self, account: str, state: dict) -> None:
        self._accounts[account] = Penalty(state["since_ms"], state["add_on"], tuple(state["breach_ids"]))

    def drop_account(self, account: str) -> None:
        self._accounts.pop(account, None)


def delist(breach: Breach, underlying: str, settle_price: float) -> Decision:
    """The ``delist_settle`` of a fired mark-manipulation breach: halt ``breach.subject`` and settle
    every position in it at ``settle_price``. Keyed by the underlying, as market actions are."""
    return Decision(ActionType.DELIST_SETTLE, underlying, breach.event_time_ms, (breach.breach_id,),
                    instrument=breach.subject,
                    params=(("instrument", breach.subject), ("settle_price", repr(settle_price)),
                            ("reason", "thin_book_pump" if breach.level == 1 else "mark_off_index")))
