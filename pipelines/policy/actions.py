"""Building signed ``Action`` records: a deterministic id and an HMAC signature.

The id is a hash of what the action *is* (type, account, instrument, side, quantity, limit, the
breaches it answers and the event time of the decision), so a worker that replays the same
inputs after a crash derives the same id and executors drop the repeat, while two decisions
that happen to look alike at different times stay two actions. The signature covers every field (see ``signing``).
"""

from __future__ import annotations

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


def action_id(action_type: str, account: str, instrument: str | None, side: str | None, quantity: float,
              limit_price: float | None, breach_ids: Iterable[str], event_time_ms: int) -> str:
    text = "|".join([action_type, account, instrument or "", side or "", repr(float(quantity)),
                     "" if limit_price is None else repr(float(limit_price)), ",".join(sorted(breach_ids)),
                     str(event_time_ms)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def make_action(key: SigningKey, action_type: ActionType | str, account: str, event_time_ms: int, *,
                instrument: str | None = None, side: str | None = None, quantity: float = 0.0,
                limit_price: float | None = None, breach_ids: Iterable[str] = (),
                params: Mapping[str, str] | None = None, expires_at_ms: int | None = None) -> dict[str, Any]:
    """An ``Action`` datum, signed with ``key``."""
    breaches = list(breach_ids)
    action: dict[str, Any] = {
        "action_id": action_id(str(action_type), account, instrument, side, quantity, limit_price, breaches,
                               event_time_ms),
        "action_type": str(action_type),
        "account": account,
        "instrument": instrument,
        "side": side,
        "quantity": float(quantity),
        "limit_price": limit_price,
        "breach_ids": breaches,
        "params": dict(params or {}),
        "expires_at_ms": expires_at_ms,
        "signing_key_id": key.key_id,
        "signature": b"",
        "event_time_ms": event_time_ms,
    }
    action["signature"] = key.sign(action)
    return action
