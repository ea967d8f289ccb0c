"""The pure parts of the metrics: lag from librdkafka statistics, per-partition series that follow
the assignment, the worker's outputs, latency clocks and clamping."""

from __future__ import annotations

import json

import pytest

from pipelines.detect.breach import Breach, BreachKind
from pipelines.ops.metrics import Metrics, lags_from_statistics
from pipelines.policy.actions import ActionType, make_action
from pipelines.policy.signing import SigningKey
from tests.kit.probes import samples as registry_samples
from tests.kit.probes import total

pytestmark = pytest.mark.ops

KEY = SigningKey("default", b"ops-test-key-0123456789abcdef")


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    return registry_samples(metrics.registry)


def partition(fetch_state: str = "active", app: int = -1001, committed: int = -1001, ls: int = 100) -> dict:
    """One partition of librdkafka's statistics, as 2.x reports it (the fields used, plus a neighbour)."""
    return {"fetch_state": fetch_state, "app_offset": app, "committed_offset": committed, "ls_offset": ls,
            "hi_offset": ls, "consumer_lag": -1}


def test_lag_is_the_last_stable_offset_minus_the_position_of_assigned_partitions_only() -> None:
    stats = {"topics": {
        "actions": {"partitions": {
            "0": partition(app=60, committed=40, ls=100),  # position: what the app was handed, not the commit
            "1": partition(committed=70, ls=100),  # nothing handed yet: starts from the commit
            "2": partition(ls=100),  # new group, nothing read: unknown, left out
            "3": partition(fetch_state="stopped", app=10, ls=100),  # revoked
            "4": partition(fetch_state="offset-query", committed=5, ls=5),  # being assigned: caught up
            "5": partition(app=80, ls=-1001),  # no watermark yet
            "-1": partition(fetch_state="none"),  # librdkafka's internal partition
        }},
        "executions": {"partitions": {"0": partition(app=120, ls=100)}},  # ahead of a stale watermark: 0
    }}
    assert lags_from_statistics(stats) == {("actions", 0): 40, ("actions", 1): 30, ("actions", 4): 0,
                                           ("executions", 0): 0}
    assert lags_from_statistics({"name": "rdkafka#consumer-1"}) == {}  # a report before any topic is known


def test_lag_series_follow_the_assignment() -> None:
    metrics = Metrics("executor")
    stats = {"topics": {"a": {"partitions": {"0": partition(app=1), "1": partition(app=7)}}}}
    metrics.librdkafka_stats(json.dumps(stats))
    lag = {dict(k)["partition"]: v for (n, k), v in samples(metrics).items() if n == "backstop_consumer_lag"}
    assert lag == {"0": 99, "1": 93}
    metrics.set_lags({("a", 1): 0})  # partition 0 moved to another executor: its owner reports it now
    lag = {dict(k)["partition"]: v for (n, k), v in samples(metrics).items() if n == "backstop_consumer_lag"}
    assert lag == {"1": 0}


def test_unreadable_statistics_leave_the_lag_alone_and_do_not_raise() -> None:
    metrics = Metrics("audit-sink")
    metrics.set_lags({("a", 0): 5})
    metrics.librdkafka_stats("{not json")
    metrics.librdkafka_stats(json.dumps({"topics": {"a": {"partitions": {"0": {"fetch_state": "active"}}}}}))
    assert total(samples(metrics), "backstop_consumer_lag", stage="audit-sink", topic="a", partition="0") == 5


def test_consumer_config_asks_librdkafka_for_statistics_every_lag_interval() -> None:
    metrics = Metrics("executor", lag_interval_s=2.5)
    config = metrics.consumer_config()
    assert config["statistics.interval.ms"] == 2500 and config["stats_cb"] == metrics.librdkafka_stats


def breach(kind: BreachKind, cleared: bool = False) -> Breach:
    return Breach(kind, "acct-1", 1_000, 0.9, 0.8, 0, 1_000, ("positions:0:1",), cleared=cleared)


def test_record_outputs_counts_breaches_and_actions_and_times_event_to_action() -> None:
    metrics = Metrics("worker")
    t = 1_795_000_000_000
    actions = [make_action(KEY, ActionType.MARGIN_CALL, "acct-1", t),
               make_action(KEY, ActionType.DELTA_HEDGE, "acct-1", t + 3_000, instrument="BTC-PERPETUAL", side="buy",
                           quantity=1.0),
               make_action(KEY, ActionType.DELTA_HEDGE, "acct-2", t + 9_000, instrument="BTC-PERPETUAL", side="buy",
                           quantity=1.0)]
    metrics.record_outputs([breach(BreachKind.MARGIN_SHORTFALL), breach(BreachKind.MARGIN_SHORTFALL),
                            breach(BreachKind.MARGIN_SHORTFALL, cleared=True), breach(BreachKind.IV_JUMP)],
                           actions, now_ms=t + 4_000)
    s = samples(metrics)
    assert s[("backstop_breaches_total", (("kind", "margin_shortfall"), ("state", "fired")))] == 2
    assert s[("backstop_breaches_total", (("kind", "margin_shortfall"), ("state", "cleared")))] == 1
    assert s[("backstop_breaches_total", (("kind", "iv_jump"), ("state", "fired")))] == 1
    assert total(s, "backstop_actions_total", stage="worker", action_type="delta_hedge", outcome="emitted") == 2
    assert total(s, "backstop_actions_total", stage="worker", action_type="margin_call", outcome="emitted") == 1
    # latencies 4 s, 1 s and -5 s (the action's event time ahead of the wall clock): clamped to 0
    assert s[("backstop_event_to_action_latency_seconds_count", ())] == 3
    assert s[("backstop_event_to_action_latency_seconds_sum", ())] == pytest.approx(5.0)
    assert s[("backstop_event_to_action_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert s[("backstop_event_to_action_latency_seconds_bucket", (("le", "1.0"),))] == 2
    assert s[("backstop_event_to_action_latency_seconds_bucket", (("le", "2.5"),))] == 2
    assert s[("backstop_event_to_action_latency_seconds_bucket", (("le", "5.0"),))] == 3


def test_executed_observes_latency_only_from_a_known_creation_time() -> None:
    metrics = Metrics("executor")
    metrics.executed("delta_hedge", "executed", created_ms=10_000, now_ms=10_250)
    metrics.executed("delta_hedge", "rejected", created_ms=None, now_ms=10_250)
    s = samples(metrics)
    assert total(s, "backstop_actions_total", stage="executor", action_type="delta_hedge", outcome="executed") == 1
    assert total(s, "backstop_actions_total", stage="executor", action_type="delta_hedge", outcome="rejected") == 1
    assert s[("backstop_action_to_execution_latency_seconds_count", ())] == 1
    assert s[("backstop_action_to_execution_latency_seconds_sum", ())] == pytest.approx(0.25)


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics("audit-sink"), Metrics("audit-sink")
    a.rows_inserted("inputs", 7)
    a.insert_error()
    a.dead_letter("bad_magic")
    a.consumed("t", 3)
    s = samples(a)
    assert s[("backstop_audit_rows_inserted_total", (("table", "inputs"),))] == 7
    assert s[("backstop_clickhouse_insert_errors_total", ())] == 1
    assert s[("backstop_dead_letters_total", (("reason", "bad_magic"), ("stage", "audit-sink")))] == 1
    assert s[("backstop_events_consumed_total", (("stage", "audit-sink"), ("topic", "t")))] == 3
    assert ("backstop_audit_rows_inserted_total", (("table", "inputs"),)) not in samples(b)
    assert samples(b)[("backstop_clickhouse_insert_errors_total", ())] == 0
