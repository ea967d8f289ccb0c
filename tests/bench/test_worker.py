"""bench_worker's own arithmetic: what it reads from a worker's metrics and the feed it paces
(the figures themselves are the benchmark's, never asserted)."""

from __future__ import annotations

from bench import bench_worker as bw
from pipelines.events.codec import default_codec

PAGE = """\
# HELP backstop_events_consumed_total Kafka messages consumed, by stage and topic
# TYPE backstop_events_consumed_total counter
backstop_events_consumed_total{stage="worker",topic="backstop.collateral"} 10.0
backstop_events_consumed_total{stage="worker",topic="backstop.positions"} 50.0
backstop_events_consumed_total{stage="worker",topic="backstop.market.mark"} 600.0
backstop_events_consumed_total{stage="worker",topic="backstop.market.index"} 2.0
backstop_events_consumed_created{stage="worker",topic="backstop.market.index"} 1.7e9
backstop_event_to_action_latency_seconds_bucket{le="0.1"} 3.0
backstop_event_to_action_latency_seconds_bucket{le="+Inf"} 7.0
"""


def test_consumed_counts_market_and_account_records_apart() -> None:
    assert bw.consumed(PAGE) == (602, 60)
    assert bw.consumed("") == (0, 0)


def test_the_latency_histogram_is_read_as_cumulative_counts_per_bound() -> None:
    assert bw.latency_histogram(PAGE) == {"0.1": 3, "+Inf": 7}


def test_the_paced_feed_publishes_its_rate_in_100_ms_steps_due_from_the_start() -> None:
    start = 1_800_000_000_000
    book, steps = bw.paced_feed(5_000.0, accounts=20, seconds=2.0, start_ms=start)
    codec = default_codec()
    times = [{codec.decode(value).value["event_time_ms"] for _, _, _, value in step} for step in steps]
    assert times == [{start + 100 * k} for k in range(20)]  # one event time per step, 100 ms apart
    assert abs(sum(len(step) for step in steps) / 2.0 - 5_000) <= 50
    assert all(codec.decode(value).value["event_time_ms"] < start for _, _, _, value in book)
    assert {topic for topic, _, _, _ in book} == {"backstop.positions", "backstop.collateral"}
