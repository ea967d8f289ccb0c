"""The wire mapping of actions: typed ``Action`` <-> Avro datum, v1 records still read, and ids
and signatures in the canonical form every signed action has had."""

from __future__ import annotations

import hashlib

import pytest

from pipelines.engine.wire import WireError, action_from_record, action_key, action_record, signed_fields
from pipelines.events.codec import default_codec
from pipelines.policy.actions import MARKET_ACTIONS, SIGNED_FIELDS, ActionType, make_action
from pipelines.policy.circuit import CIRCUIT_ACTIONS
from pipelines.policy.signing import SigningKey

KEY = SigningKey("k1", b"wire-test-key-0123456789")
T = 1_795_000_000_000


def v1_record(action_type: str, target: str, **fields: object) -> dict:
    """An Action v1 datum built the way actions were before the typed record: the target in
    ``account``, the id a hash of the fields, the signature over every other field."""
    record = {"action_type": action_type, "account": target, "instrument": None, "side": None, "quantity": 0.0,
              "limit_price": None, "breach_ids": [], "params": {}, "expires_at_ms": None,
              "signing_key_id": KEY.key_id, "signature": b"", "event_time_ms": T, **fields}
    text = "|".join([action_type, target, record["instrument"] or "", record["side"] or "",
                     repr(float(record["quantity"])),
                     "" if record["limit_price"] is None else repr(float(record["limit_price"])),
                     ",".join(sorted(record["breach_ids"])), str(T)])
    record["action_id"] = hashlib.sha256(text.encode()).hexdigest()[:32]
    record["signature"] = KEY.sign(record)
    return record


def test_ids_and_signatures_are_those_of_the_v1_form() -> None:
    hedge = make_action(KEY, ActionType.DELTA_HEDGE, "acct-1", T, instrument="BTC-PERPETUAL", side="buy",
                        quantity=2.5, limit_price=61_000.0, breach_ids=["b2", "b1"], params={"k": "v"})
    halt = make_action(KEY, ActionType.HALT, "BTC", T, breach_ids=["b9"], params={"level": "1"})
    legacy_hedge = v1_record("delta_hedge", "acct-1", instrument="BTC-PERPETUAL", side="buy", quantity=2.5,
                             limit_price=61_000.0, breach_ids=["b2", "b1"], params={"k": "v"})
    legacy_halt = v1_record("halt", "BTC", breach_ids=["b9"], params={"level": "1"})
    assert (hedge.action_id, hedge.signature) == (legacy_hedge["action_id"], legacy_hedge["signature"])
    assert (halt.action_id, halt.signature) == (legacy_halt["action_id"], legacy_halt["signature"])
    assert action_from_record(legacy_halt) == halt and action_from_record(legacy_hedge) == hedge


def test_a_halt_names_its_underlying_not_an_account() -> None:
    halt = make_action(KEY, ActionType.HALT, "ETH", T, instrument="ETH-PERPETUAL")
    record = action_record(halt)
    assert (halt.account, halt.underlying, action_key(halt)) == (None, "ETH", "ETH")
    assert (record["account"], record["underlying"]) == ("", "ETH")
    assert KEY.verify(signed_fields(record), record["signature"])
    codec = default_codec()
    decoded = codec.decode(codec.encode("Action", record), expected="Action").value
    assert action_from_record(decoded) == halt


def test_every_type_round_trips_and_verifies() -> None:
    for kind in ActionType:
        action = make_action(KEY, kind, "BTC" if kind in MARKET_ACTIONS else "acct", T,
                             instrument="BTC-PERPETUAL", side="sell", quantity=1.0, breach_ids=["b"])
        record = action_record(action)
        assert action_from_record(record) == action and action.verify(KEY)
        assert KEY.verify(signed_fields(record), action.signature)
        assert record["account" if action.account else "underlying"] == action_key(action)


def test_a_field_a_later_version_adds_leaves_the_signature_valid() -> None:
    """The signature covers SIGNED_FIELDS by name: a datum read with a later reader schema (one
    more field, filled in with its default) still verifies, and the typed record signs exactly them."""
    hedge = make_action(KEY, ActionType.DELTA_HEDGE, "acct", T, instrument="BTC-PERPETUAL", side="buy", quantity=1.0)
    assert tuple(hedge.signed_fields()) == SIGNED_FIELDS
    later = {**action_record(hedge), "venue_hint": "deribit"}
    assert KEY.verify(signed_fields(later), hedge.signature)
    assert not KEY.verify(signed_fields({**later, "quantity": 2.0}), hedge.signature)


def test_the_market_wide_actions_are_the_circuits_and_the_delisting() -> None:
    assert MARKET_ACTIONS == {*CIRCUIT_ACTIONS.values(), ActionType.DELIST_SETTLE}


def test_a_moved_target_no_longer_verifies_or_is_refused() -> None:
    halt = action_record(make_action(KEY, ActionType.HALT, "BTC", T))
    assert not KEY.verify(signed_fields({**halt, "account": "victim"}), halt["signature"])
    with pytest.raises(WireError) as both:
        action_from_record({**halt, "account": "BTC"})
    hedge = action_record(make_action(KEY, ActionType.DELTA_HEDGE, "acct", T, instrument="BTC-PERPETUAL", side="buy"))
    with pytest.raises(WireError) as stray:
        action_from_record({**hedge, "underlying": "BTC"})
    with pytest.raises(WireError) as unknown:
        action_from_record({**hedge, "action_type": "teleport"})
    assert (both.value.reason, stray.value.reason, unknown.value.reason) == (
        "bad_target", "bad_target", "unknown_action_type")


def test_make_action_refuses_an_unknown_type() -> None:
    with pytest.raises(ValueError):
        make_action(KEY, "teleport", "acct", T)
