"""Actions as the executor and the audit sink read them: Avro datums, signed."""

from __future__ import annotations

from typing import Any

from pipelines.engine.wire import action_record, signed_fields
from pipelines.policy.actions import make_action
from pipelines.policy.signing import SigningKey


def signed(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``make_action``'s Avro datum (same arguments)."""
    return action_record(make_action(*args, **kwargs))


def resigned(record: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """``record`` signed with ``key`` as it stands: any datum, as a buggy worker could sign it."""
    return {**record, "signature": key.sign(signed_fields(record))}
