"""The market fan-out's batches: what goes in comes out, in order, within the size bound."""

from __future__ import annotations

from pipelines.events.codec import default_codec
from pipelines.events.validation import Validator
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


def batch_message(items: list[tuple[str, bytes | None, bytes | None]]) -> bytes:
    [batch] = fanout.batches(items, 0)
    return CODEC.encode("MarketBatch", batch)


def test_a_batch_is_opened_once_and_its_copies_get_the_same_records() -> None:
    opened = fanout.OpenedBatches(CODEC, Validator())
    items = [(f"backstop.market.index:0:{k}", b"BTC", index(60_000.0 + k, 1_000 + k)) for k in range(5)]
    first = opened.open(batch_message(items), 2_000)
    again = opened.open(batch_message(items), 2_000)  # another partition's copy: equal bytes, another object
    assert again is first
    assert [(item["source"], message.offset, message.value["price"]) for item, message in first] == \
        [(source, k, 60_000.0 + k) for k, (source, _, _) in enumerate(items)]
    assert all(message is other for (_, message), (_, other) in zip(first, again))


def test_a_batch_cut_differently_from_the_same_source_is_opened_anew() -> None:
    """A fan-out forwarding again after a restart starts its batch at the same source (the same
    batch id) but may carry other records: only equal bytes share what was opened."""
    opened = fanout.OpenedBatches(CODEC, Validator())
    items = [(f"backstop.market.index:0:{k}", None, index(60_000.0 + k, 1_000 + k)) for k in range(4)]
    short, long = opened.open(batch_message(items[:2]), 2_000), opened.open(batch_message(items), 2_000)
    assert [m.offset for _, m in short] == [0, 1] and [m.offset for _, m in long] == [0, 1, 2, 3]


def test_refused_records_are_refused_for_every_copy_and_bad_messages_are_not_kept() -> None:
    opened = fanout.OpenedBatches(CODEC, Validator())
    items = [("backstop.market.index:0:0", None, index(float("nan"), 1_000)),
             ("backstop.market.index:0:1", None, index(60_000.0, 1_001))]
    for _ in range(2):
        [(_, bad), (_, good)] = opened.open(batch_message(items), 2_000)
        assert isinstance(bad, Refused) and bad.reason == "nan_price" and bad.offset == 0
        assert not isinstance(good, Refused) and good.offset == 1
    garbage = opened.open(b"garbage", 2_000)
    assert isinstance(garbage, Refused) and isinstance(opened.open(b"garbage", 2_000), Refused)
    missing = opened.open(None, 2_000)  # a tombstone on the fan-out topic
    assert isinstance(missing, Refused) and missing.reason == "missing_value"


def test_the_oldest_batches_are_let_go_past_the_record_bound_the_latest_kept() -> None:
    opened = fanout.OpenedBatches(CODEC, Validator(), max_records=6)
    messages = [batch_message([(f"backstop.market.index:0:{10 * b + k}", None, index(60_000.0, 1_000 + k))
                               for k in range(4)]) for b in range(3)]
    first = [opened.open(m, 2_000) for m in messages]
    assert opened.open(messages[2], 2_000) is first[2]  # the latest stays, though alone it is within bound
    assert opened.open(messages[0], 2_000) is not first[0]  # evicted: opened again, equal records
    assert [m.value for _, m in opened.open(messages[0], 2_000)] == [m.value for _, m in first[0]]
    big = batch_message([(f"backstop.market.index:0:{100 + k}", None, index(60_000.0, 1_000 + k)) for k in range(9)])
    assert opened.open(big, 2_000) is opened.open(big, 2_000)  # a batch above the bound is kept alone
