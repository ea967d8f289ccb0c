"""The one wire mapping of the core's typed outputs: ``Breach`` and ``Action`` to and from their
Avro datums, and their Kafka keys.

The stream workers, the demo, the replay, the executors and the audit sink map through here and
nowhere else. An action on an account names it in ``account``; a market-wide action
(``MARKET_ACTIONS``) names its underlying in ``underlying`` and leaves ``account`` empty. A market-wide
action recorded before ``underlying`` existed (Action v1) named the underlying in ``account``:
``action_from_record`` reads both shapes into the same ``Action``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.detect.breach import Breach
from pipelines.engine.shards import ACCOUNT_BREACHES, market_subject
from pipelines.policy.actions import MARKET_ACTIONS, SIGNED_FIELDS, Action, ActionType


class WireError(ValueError):
    """A decoded record that no core type can hold; ``reason`` is its dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def breach_key(breach: Breach) -> str:
    """Account breaches are keyed by account; market breaches by their underlying."""
    return breach.subject if breach.kind in ACCOUNT_BREACHES else market_subject(breach.subject)


def breach_record(breach: Breach) -> dict[str, Any]:
    """The ``Breach`` datum of a core breach. A trigger is the ``topic:partition:offset`` of an
    input; refs of fed-back events (``feedback:account:sequence``) are kept as event ids at
    offset -1."""
    market = breach.kind not in ACCOUNT_BREACHES
    triggers = []
    for ref in breach.triggers:
        parts = ref.rsplit(":", 2)
        try:
            triggers.append({"topic": parts[0], "partition": int(parts[1]), "offset": int(parts[2]), "event_id": ref})
        except (IndexError, ValueError):
            triggers.append({"topic": parts[0], "partition": -1, "offset": -1, "event_id": ref})
    return {
        "breach_id": breach.breach_id, "kind": breach.kind.value,
        "account": breach_key(breach),
        "underlying": market_subject(breach.subject) if market else None,
        "instrument": breach.subject if market and "-" in breach.subject else None,
        "observed": float(breach.value), "threshold": float(breach.threshold),
        "severity": "critical" if breach.kind.value in ("equity_below_liquidation", "margin_shortfall") else "warning",
        "window_start_ms": breach.window_start_ms, "window_end_ms": breach.window_end_ms, "triggers": triggers,
        "details": {"level": str(breach.level), "cleared": "true" if breach.cleared else "false",
                    "subject": breach.subject},
        "event_time_ms": breach.event_time_ms,
    }


def action_key(action: Action) -> str:
    """An action's Kafka key: its account, or the underlying of a market-wide action."""
    return action.target


def action_record(action: Action) -> dict[str, Any]:
    """The ``Action`` datum (v2) of an action."""
    return {
        "action_id": action.action_id, "action_type": str(action.action_type), "account": action.account or "",
        "instrument": action.instrument, "side": action.side, "quantity": action.quantity,
        "limit_price": action.limit_price, "breach_ids": list(action.breach_ids), "params": dict(action.params),
        "expires_at_ms": action.expires_at_ms, "signing_key_id": action.signing_key_id,
        "signature": action.signature, "event_time_ms": action.event_time_ms, "underlying": action.underlying,
    }


def record_target(record: Mapping[str, Any]) -> str:
    """The target an ``Action`` datum names: its account, else (a v2 market-wide action) its underlying."""
    return record["account"] or record.get("underlying") or ""


def signed_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the signature of an ``Action`` datum (v1 or v2) covers: ``Action.signed_fields()`` of
    the action it encodes — the ``SIGNED_FIELDS``, the target under ``account`` (a field missing
    from the datum counts as null). Verify with it before ``action_from_record``: any datum has a
    signed form, and a field a later schema version adds does not change it."""
    fields = {name: record.get(name) for name in SIGNED_FIELDS}
    fields["account"] = record_target(record)
    return fields


def action_from_record(record: Mapping[str, Any]) -> Action:
    """The ``Action`` of a decoded datum, v1 or v2. Raise ``WireError`` ("unknown_action_type",
    "bad_target") when no ``Action`` can hold it; the signature is not checked here."""
    kind = record["action_type"]
    if kind not in ActionType._value2member_map_:
        raise WireError("unknown_action_type", f"unknown action type {kind!r}")
    action_type = ActionType(kind)
    account, underlying = record["account"], record.get("underlying")
    if action_type in MARKET_ACTIONS:
        if (account == "") == (underlying is None):
            raise WireError("bad_target", f"a {kind} action names its underlying in account (v1) or underlying (v2), "
                                          f"not account={account!r} underlying={underlying!r}")
        account, underlying = None, underlying or account
    elif underlying is not None:
        raise WireError("bad_target", f"a {kind} action names an account, not underlying {underlying!r}")
    return Action(
        action_id=record["action_id"], action_type=action_type, account=account, underlying=underlying,
        instrument=record.get("instrument"), side=record.get("side"), quantity=float(record.get("quantity", 0.0)),
        limit_price=record.get("limit_price"), breach_ids=tuple(record.get("breach_ids", ())),
        params=dict(record.get("params") or {}), expires_at_ms=record.get("expires_at_ms"),
        signing_key_id=record.get("signing_key_id", ""), signature=record.get("signature", b""),
        event_time_ms=record["event_time_ms"])
