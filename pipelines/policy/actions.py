"""Signed ``Action`` records: a deterministic id and an HMAC signature.

The id is a hash of what the action *is* (type, target, instrument, side, quantity, limit, the
breaches it answers and the event time of the decision), so a worker that replays the same
inputs after a crash derives the same id and executors drop the repeat, while two decisions
that happen to look alike at different times stay two actions.

An action targets either one account or, for the market-wide halt, market_reduce_only, resume
and delist_settle (``MARKET_ACTIONS``), one underlying: exactly one of ``account`` and ``underlying`` is
set. The signature covers ``signed_fields()``: every field but the signature, the target under
the key ``account`` (the canonical form every signed action has had, so ids and signatures of
recorded actions still verify; see ``signing``). The Avro form is ``pipelines.engine.wire``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from pipelines.policy.signing import SigningKey


class ActionType(StrEnum):
    MARGIN_CALL = "margin_call"
    REDUCE_ONLY = "reduce_only"
    PARTIAL_LIQUIDATION = "partial_liquidation"
    FULL_LIQUIDATION = "full_liquidation"
    DELTA_HEDGE = "delta_hedge"
    TRANSFER_TO_LP = "transfer_to_lp"
    INSURANCE_FUND = "insurance_fund"
    AUTO_DELEVERAGE = "auto_deleverage"
    HALT = "halt"
    MARKET_REDUCE_ONLY = "market_reduce_only"  # an underlying's whole market, not one account (``REDUCE_ONLY``)
    RESUME = "resume"
    FREEZE_WITHDRAWALS = "freeze_withdrawals"
    DELIST_SETTLE = "delist_settle"


MARKET_ACTIONS = frozenset({ActionType.HALT, ActionType.MARKET_REDUCE_ONLY, ActionType.RESUME,
                            ActionType.DELIST_SETTLE})
"""Action types that target an underlying (every holder of it, or of its ``instrument``), not an
account: the circuits' trading states (``policy.circuit.CIRCUIT_ACTIONS``) and a delisting."""


#: What a signature covers, by name: a field an ``Action`` datum gains in a later schema version is
#: not signed unless it is added here (and then only records of that version verify).
SIGNED_FIELDS = ("action_id", "action_type", "account", "instrument", "side", "quantity", "limit_price",
                 "breach_ids", "params", "expires_at_ms", "signing_key_id", "event_time_ms")


@dataclasses.dataclass(frozen=True)
class Action:
    """One signed action. Invariant: ``underlying`` is set (and ``account`` None) exactly when
    ``action_type`` is in ``MARKET_ACTIONS``; ``quantity`` is a float; ``breach_ids`` keep the
    order they were given in."""

    action_id: str
    action_type: ActionType
    account: str | None
    underlying: str | None
    instrument: str | None
    side: str | None
    quantity: float
    limit_price: float | None
    breach_ids: tuple[str, ...]
    params: Mapping[str, str]
    expires_at_ms: int | None
    signing_key_id: str
    signature: bytes
    event_time_ms: int

    def __post_init__(self) -> None:
        market = self.action_type in MARKET_ACTIONS
        if market != (self.underlying is not None) or market == (self.account is not None):
            raise ValueError(f"a {self.action_type} action targets {'an underlying' if market else 'an account'}, "
                             f"not account={self.account!r} underlying={self.underlying!r}")

    @property
    def target(self) -> str:
        """The account, or the underlying of a market-wide action: the Kafka key and the id's subject."""
        return self.underlying if self.underlying is not None else self.account  # type: ignore[return-value]

    def signed_fields(self) -> dict[str, Any]:
        """The fields the signature covers (``SIGNED_FIELDS``), in their canonical shape."""
        return {"action_id": self.action_id, "action_type": str(self.action_type), "account": self.target,
                "instrument": self.instrument, "side": self.side, "quantity": self.quantity,
                "limit_price": self.limit_price, "breach_ids": list(self.breach_ids), "params": dict(self.params),
                "expires_at_ms": self.expires_at_ms, "signing_key_id": self.signing_key_id,
                "event_time_ms": self.event_time_ms}

    def verify(self, key: SigningKey) -> bool:
        """Whether ``signature`` is ``key``'s over ``signed_fields()``."""
        return bool(self.signature) and key.verify(self.signed_fields(), self.signature)


def action_id(action_type: str, target: str, instrument: str | None, side: str | None, quantity: float,
              limit_price: float | None, breach_ids: Iterable[str], event_time_ms: int) -> str:
    text = "|".join([action_type, target, instrument or "", side or "", repr(float(quantity)),
                     "" if limit_price is None else repr(float(limit_price)), ",".join(sorted(breach_ids)),
                     str(event_time_ms)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def make_action(key: SigningKey, action_type: ActionType | str, target: str, event_time_ms: int, *,
                instrument: str | None = None, side: str | None = None, quantity: float = 0.0,
                limit_price: float | None = None, breach_ids: Iterable[str] = (),
                params: Mapping[str, str] | None = None, expires_at_ms: int | None = None) -> Action:
    """An ``Action`` on ``target`` — an account, or the underlying of a halt or resume — signed
    with ``key``. Raise ValueError for an unknown ``action_type``."""
    kind = ActionType(action_type)
    breaches = tuple(breach_ids)
    market = kind in MARKET_ACTIONS
    unsigned = Action(
        action_id=action_id(kind, target, instrument, side, quantity, limit_price, breaches, event_time_ms),
        action_type=kind, account=None if market else target, underlying=target if market else None,
        instrument=instrument, side=side, quantity=float(quantity), limit_price=limit_price, breach_ids=breaches,
        params=dict(params or {}), expires_at_ms=expires_at_ms, signing_key_id=key.key_id, signature=b"",
        event_time_ms=event_time_ms)
    return dataclasses.replace(unsigned, signature=key.sign(unsigned.signed_fields()))
