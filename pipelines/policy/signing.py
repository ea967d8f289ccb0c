"""HMAC signatures on actions, so an executor can reject an action nobody authorised.

The signature covers a canonical encoding of every field but the signature itself: JSON with
sorted keys, no whitespace, floats as ``repr`` (shortest round-trip form), bytes as hex. The key
comes from the environment or a secret file — never from code, never into logs; ``SigningKey``
does not print its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.errors import UserError

KEY_ENV = "BACKSTOP_ACTIONS_SIGNING_KEY"


class SigningKey:
    """An HMAC-SHA256 key with an id (for rotation)."""

    __slots__ = ("key_id", "_secret")

    def __init__(self, key_id: str, secret: bytes) -> None:
        if len(secret) < 16:
            raise UserError("the action signing key must be at least 16 bytes")
        self.key_id = key_id
        self._secret = secret

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, secret=<hidden>)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SigningKey:
        """``$BACKSTOP_ACTIONS_SIGNING_KEY``, or the file named by ``$BACKSTOP_ACTIONS_SIGNING_KEY_FILE``."""
        env = os.environ if env is None else env
        key_id = env.get(f"{KEY_ENV}_ID", "default")
        if env.get(KEY_ENV):
            return cls(key_id, env[KEY_ENV].encode())
        path = env.get(f"{KEY_ENV}_FILE")
        if path:
            try:
                return cls(key_id, Path(path).read_bytes().strip())
            except OSError as exc:
                raise UserError(f"{KEY_ENV}_FILE: cannot read {path}: {exc.strerror}") from None
        raise UserError(f"no action signing key: set {KEY_ENV} or {KEY_ENV}_FILE")

    def sign(self, fields: Mapping[str, Any]) -> bytes:
        return hmac.new(self._secret, canonical(fields), hashlib.sha256).digest()

    def verify(self, fields: Mapping[str, Any], signature: bytes) -> bool:
        return hmac.compare_digest(self.sign(fields), signature)


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The signed bytes: every field except ``signature``, in a stable textual form."""
    return json.dumps({k: v for k, v in fields.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":"), default=_encode).encode()


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(f"cannot sign a {type(value).__name__}")
