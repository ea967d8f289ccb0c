from __future__ import annotations

import pytest

from pipelines.errors import UserError
from pipelines.policy.signing import SigningKey

ACTION = {"action_id": "a1", "action_type": "partial_liquidation", "account": "acct-1", "quantity": 2.5,
          "breach_ids": ["b1", "b2"], "params": {"max_slippage_bps": "50"}, "signature": b""}


def test_sign_verify_and_tamper_detection() -> None:
    key = SigningKey("k1", b"0123456789abcdef0123")
    signature = key.sign(ACTION)
    assert key.verify({**ACTION, "signature": signature}, signature)
    assert not key.verify({**ACTION, "quantity": 25.0}, signature)
    assert not key.verify({**ACTION, "breach_ids": ["b1"]}, signature)
    assert not SigningKey("k1", b"another-secret-key-xx").verify(ACTION, signature)


def test_key_from_env_or_file_and_never_printed(tmp_path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("file-secret-0123456789\n")
    from_file = SigningKey.from_env({"BACKSTOP_ACTIONS_SIGNING_KEY_FILE": str(secret_file)})
    from_env = SigningKey.from_env({"BACKSTOP_ACTIONS_SIGNING_KEY": "file-secret-0123456789"})
    assert from_file.sign(ACTION) == from_env.sign(ACTION)
    assert "secret" not in repr(from_file).replace("secret=<hidden>", "")
    with pytest.raises(UserError, match="no action signing key"):
        SigningKey.from_env({})
    with pytest.raises(UserError, match="at least 16 bytes"):
        SigningKey("k", b"short")
