"""Every kind of undecodable value is a DecodeError with its reason code, never anything else."""

from __future__ import annotations

import os
import struct

import pytest

from pipelines.events.codec import Codec, DecodeError, frame
from pipelines.events.registry import EmbeddedRegistry
from tests.kit.records import sample


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def reason(codec: Codec, data, expected=None) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(data, expected)
    return info.value.reason


def test_reasons(codec: Codec):
    good = codec.encode("PositionUpdate", sample("PositionUpdate"))
    assert reason(codec, None) == "missing_value"
    assert reason(codec, b"") == "missing_value"
    assert reason(codec, b'{"account": "x"}') == "bad_magic"
    assert reason(codec, b"\x00\x00\x00") == "truncated"
    assert reason(codec, good[:-3]) == "truncated"
    assert reason(codec, frame(999_999, good[5:])) == "unknown_schema_id"
    assert reason(codec, good, "IndexPrice") == "wrong_record_type"
    assert reason(codec, good, {"IndexPrice", "MarkPrice"}) == "wrong_record_type"
    assert reason(codec, good + b"\x00\x01") == "malformed"
    assert codec.decode(good, {"PositionUpdate"}).record == "PositionUpdate"


def test_every_truncation_is_caught(codec: Codec):
    for record in ("PositionUpdate", "Breach", "OrderBookDepth", "Action"):
        good = codec.encode(record, sample(record))
        for n in range(len(good)):
            with pytest.raises(DecodeError):
                codec.decode(good[:n])


def test_random_garbage_never_escapes_as_another_exception(codec: Codec):
    rng = __import__("random").Random(7)
    for _ in range(3000):
        body = rng.randbytes(rng.randrange(0, 80))
        schema_id = rng.choice([1, 2, 5, 10, 11, 13, 77])
        try:
            codec.decode(struct.pack(">bI", 0, schema_id) + body)
        except DecodeError:
            pass
    for _ in range(200):
        try:
            codec.decode(os.urandom(40))
        except DecodeError:
            pass
