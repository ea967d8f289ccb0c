"""The venue-scale feed the core and worker benchmarks share: valid records, the same for the
same spec, laid out as Kafka (and its replay file) holds them."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench import venue_feed
from pipelines.engine.shards import partition_for
from pipelines.errors import UserError
from pipelines.events.validation import INSTRUMENT_NAME, Validator
from pipelines.replay.inprocess import load
from pipelines.risk.instruments import Kind, parse_instrument
from pipelines.topics import ACCOUNT_PARTITIONS

REPO = Path(__file__).resolve().parents[2]

SMALL = venue_feed.FeedSpec(accounts=60, positions_per_account=5, options=40, seconds=2.0, crash=0.3)


@pytest.fixture(scope="module")
def events() -> list[venue_feed.Event]:
    return venue_feed.feed(SMALL)


def test_every_record_passes_the_validator(events: list[venue_feed.Event]) -> None:
    validator = Validator()
    problems = [(record, value, validator.validate(record, value, value["event_time_ms"]))
                for _, record, value in events]
    assert [p for p in problems if p[2] is not None] == []
    assert all(INSTRUMENT_NAME.match(value["instrument"]) for _, record, value in events if "instrument" in value
               and value["instrument"] is not None)


def test_the_same_spec_gives_the_same_feed_and_another_seed_another(events: list[venue_feed.Event]) -> None:
    assert venue_feed.feed(SMALL) == events
    other = venue_feed.feed(venue_feed.FeedSpec(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    assert len(other) == len(events) and other != events


def test_the_book_and_the_market_have_the_asked_for_shape(events: list[venue_feed.Event]) -> None:
    times = [value["event_time_ms"] for _, _, value in events]
    assert times == sorted(times)
    positions = Counter(value["account"] for _, record, value in events if record == "PositionUpdate")
    deposits = Counter(value["account"] for _, record, value in events if record == "CollateralUpdate")
    assert len(positions) == SMALL.accounts and set(positions.values()) == {SMALL.positions_per_account}
    assert deposits == Counter(positions.keys())
    chain = venue_feed.option_chain(SMALL.options)
    assert len({i.name for i in chain}) == SMALL.options and {i.underlying for i in chain} == {"BTC", "ETH"}
    assert all(i.kind is Kind.OPTION and i.expiry_ms > venue_feed.T0 for i in chain)
    steps = int(SMALL.seconds * 1000 / SMALL.cadence_ms)
    marks = Counter(value["instrument"] for _, record, value in events if record == "MarkPrice"
                    and value["mark_iv"] is not None)
    assert marks == Counter({i.name: steps for i in chain})  # mark and IV of every option, every 100 ms
    index = Counter(value["underlying"] for _, record, value in events if record == "IndexPrice")
    depth = Counter(value["instrument"] for _, record, value in events if record == "OrderBookDepth")
    assert index == {"BTC": steps, "ETH": steps} and depth == {"BTC-PERPETUAL": steps, "ETH-PERPETUAL": steps}
    for _, record, value in events:  # the position names are the risk core's, and held options are the chain's
        if record == "PositionUpdate":
            assert parse_instrument(value["instrument"]).kind is Kind.PERPETUAL or value["instrument"] in marks


def test_the_crash_option_moves_the_index_by_its_fraction() -> None:
    steps = 200
    calm = venue_feed.index_paths(venue_feed.FeedSpec(crash=0.0), steps)
    crash = venue_feed.index_paths(venue_feed.FeedSpec(crash=0.4), steps)
    for underlying, spot in venue_feed.SPOT.items():
        assert abs(calm[underlying][-1] / spot - 1) < 0.01
        assert crash[underlying][-1] / calm[underlying][-1] == pytest.approx(0.6, rel=1e-9)
        assert crash[underlying][: steps // 5].tolist() == calm[underlying][: steps // 5].tolist()  # falls from 20 %


def test_rows_are_what_the_replay_file_holds(events: list[venue_feed.Event], tmp_path: Path) -> None:
    rows = list(venue_feed.rows(events))
    path = tmp_path / "venue.avro"
    assert venue_feed.write_feed(path, events) == len(events)
    assert list(load(path)) == rows
    for _topic, partition, _, record, value in rows:
        if record in ("PositionUpdate", "CollateralUpdate"):
            assert partition == partition_for(value["account"], ACCOUNT_PARTITIONS)
    offsets: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset, _, _ in rows:
        offsets.setdefault((topic, partition), []).append(offset)
    assert all(o == list(range(len(o))) for o in offsets.values())


def test_accounts_open_funded_at_their_drawn_ratio() -> None:
    spec = venue_feed.FeedSpec(accounts=200, options=40)
    chain = venue_feed.option_chain(spec.options)
    from pipelines.risk.book import revalue_book

    risk = revalue_book(venue_feed.opening(spec, chain).book(), venue_feed.opening_market(chain))
    funded = risk.equity > 1_000.0 + 1e-6  # the 1,000 USDC floor aside
    ratio = risk.base_maintenance[funded] / risk.equity[funded]
    assert funded.sum() > 100
    assert ratio.max() <= spec.ratio_range[1] * 1.02 and math.isfinite(ratio.min())


def test_bad_specs_are_refused_with_the_field() -> None:
    for bad, field in ((dict(accounts=0), "accounts"), (dict(seconds=0), "seconds"), (dict(crash=1.2), "crash"),
                       (dict(ratio_range=(0.5, 1.5)), "ratio range")):
        with pytest.raises(UserError, match=field):
            venue_feed.feed(venue_feed.FeedSpec(**{**SMALL.__dict__, **bad}))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "venue_feed.py"), "--out", "/dev/null",
                           "--crash", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "crash" in proc.stderr
