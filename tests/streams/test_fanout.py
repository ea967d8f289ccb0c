"""The market fan-out's batches: what goes in comes out, in order, within the size bound."""

from __future__ import annotations

from pipelines.events.codec import default_codec
from pipelines.streams import fanout
from pipelines.streams.intake import Refused

CODEC = default_codec()


def index(price: float, t: int) -> bytes:
    return CODEC.encode("IndexPrice", {"underlying": "BTC", "index_name": "btc", "price": price, "event_time_ms": t})


def test_records_come_out_of_the_batches_as_they_went_in() -> None:
    items = [(f"backstop.market.index:{k % 3}:{k}", b"BTC" if k % 2 else None, index(60_000.0 + k, 1_000 + k))
             for k in range(500)]
    bound = 20 * len(items[0][2])
    batches = list(fanout.batches(items, 1_234, max_bytes=bound))
    assert len(batches) > 1
    out = []
    for batch in batches:
        assert sum(len(i["value"]) + len(i["key"] or b"") for i in batch["items"]) <= bound
        assert batch["batch_id"] == batch["items"][0]["source"] and batch["event_time_ms"] == 1_234
        unpacked = fanout.unpack(CODEC, CODEC.encode("MarketBatch", batch))
        out += [(i["source"], i["key"], i["value"]) for i in unpacked]
    assert out == items


def test_a_record_larger_than_the_bound_travels_alone() -> None:
    big, small = ("s:0:1", None, b"x" * 100), ("s:0:2", None, b"y")
    assert [len(b["items"]) for b in fanout.batches([small, big, small], 0, max_bytes=10)] == [1, 1, 1]


def test_a_message_that_is_no_batch_is_refused_with_the_codec_reason() -> None:
    refused = fanout.unpack(CODEC, index(60_000.0, 1))
    assert isinstance(refused, Refused) and refused.reason == "wrong_record_type"
    assert isinstance(fanout.unpack(CODEC, b"garbage"), Refused)
