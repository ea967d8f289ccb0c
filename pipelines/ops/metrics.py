"""Prometheus metrics of the long-running shells: stream worker, executor and audit sink.

One ``Metrics`` per process, on a registry of its own rather than prometheus_client's global
one: a process exposes exactly what it registered, and tests build as many as they like. The
``stage`` given at construction (``worker``, ``executor``, ``audit-sink``) labels the series
every stage shares, so one dashboard can put the roles side by side.

The methods say what happened, in the shell's words; the shells call them after the fact they
count is final (the executor after its batch's transaction committed), so an aborted and
redelivered batch is not counted twice. Latencies are clamped at zero: a negative one only says
two clocks disagree, and would corrupt the histogram's sum.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from pipelines.detect.breach import Breach
from pipelines.policy.actions import Action

log = logging.getLogger(__name__)

# From a few ms (the executor's batch) to minutes (a backlog after an outage); beyond: +Inf.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# librdkafka fetch states of a partition that is not (or no longer) assigned to the consumer
UNASSIGNED_FETCH_STATES = frozenset({"none", "stopping", "stopped"})


class Metrics:
    """Every series the backstop exposes; each shell updates the ones that concern it."""

    def __init__(self, stage: str, *, lag_interval_s: float = 5.0, registry: CollectorRegistry | None = None) -> None:
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        self.lag_interval_s = lag_interval_s
        self._lag_partitions: set[tuple[str, int]] = set()
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
        r = self.registry
        self._consumed = Counter("backstop_events_consumed", "Kafka messages consumed, by stage and topic",
                                 ("stage", "topic"), registry=r)
        self._lag = Gauge("backstop_consumer_lag", "Messages between the consumer's position and the partition's "
                          "high watermark (last stable offset under read_committed), per assigned partition",
                          ("stage", "topic", "partition"), registry=r)
        self._breaches = Counter("backstop_breaches", "Breach reports emitted, by kind and state (fired, cleared)",
                                 ("kind", "state"), registry=r)
        self._actions = Counter("backstop_actions", "Actions by stage, type and outcome "
                                "(worker: emitted; executor: executed or rejected)",
                                ("stage", "action_type", "outcome"), registry=r)
        self._event_to_action = Histogram(
            "backstop_event_to_action_latency_seconds",
            "Wall clock when the worker emits an action minus the action's event time", buckets=LATENCY_BUCKETS_S,
            registry=r)
        self._action_to_execution = Histogram(
            "backstop_action_to_execution_latency_seconds",
            "Executor: wall clock when the batch committed minus the action message's Kafka timestamp",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self._step = Histogram(
            "backstop_worker_step_seconds",
            "Worker: how long one step (poll the group, read, apply, send) took. The group's rebalance "
            "callbacks run between steps, so a long step delays a takeover", buckets=LATENCY_BUCKETS_S, registry=r)
        self._applied = Counter("backstop_events_applied", "Worker: input records its engines applied (a record "
                                "applied again by a lane catching up counts again)", registry=r)
        self._stalled = Gauge("backstop_partition_stalled_seconds",
                              "Worker: how long an account partition held here has applied nothing while records "
                              "for it wait (held back, or on the broker); 0 while it keeps up", ("partition",),
                              registry=r)
        self._dead_letters = Counter("backstop_dead_letters", "Messages this stage dead-lettered, by reason",
                                     ("stage", "reason"), registry=r)
        self._insert_errors = Counter("backstop_clickhouse_insert_errors",
                                      "Audit inserts that failed with the store unavailable (each is retried)",
                                      registry=r)
        self._rows = Counter("backstop_audit_rows_inserted", "Rows inserted into the audit store, by table",
                             ("table",), registry=r)

    # ------------------------------------------------------------------ every stage

    def consumed(self, topic: str, count: int = 1) -> None:
        """``count`` messages of ``topic`` taken off Kafka."""
        self._consumed.labels(self.stage, topic).inc(count)

    def dead_letter(self, reason: str) -> None:
        """One message this stage could not use, sent to the dead letters (or stored as one)."""
        self._dead_letters.labels(self.stage, reason).inc()

    def set_lags(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Lag per ``(topic, partition)`` now assigned; partitions no longer listed lose their series,
        so a partition that moved to another process is reported by its owner only."""
        for topic, partition in self._lag_partitions - set(lags):
            self._lag.remove(self.stage, topic, str(partition))
        for (topic, partition), lag in lags.items():
            self._lag.labels(self.stage, topic, str(partition)).set(lag)
        self._lag_partitions = set(lags)

    def consumer_config(self) -> dict[str, Any]:
        """Merge into a confluent-kafka consumer's config: librdkafka then hands its statistics,
        watermarks and positions included, to ``librdkafka_stats`` every ``lag_interval_s``, from
        inside the consumer's own poll, so lag costs the loop nothing in between. One consumer per
        ``Metrics``: each report replaces the lag series."""
        return {"statistics.interval.ms": max(1, round(self.lag_interval_s * 1000)), "stats_cb": self.librdkafka_stats}

    def librdkafka_stats(self, stats_json: str) -> None:
        """The consumer's ``stats_cb``: lag per assigned partition from its statistics. An exception
        here would surface from the consumer's poll and stop the stage, so a report this cannot
        read is logged and skipped instead."""
        try:
            lags = lags_from_statistics(json.loads(stats_json))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable librdkafka statistics, lag not updated: %r", exc)
            return
        self.set_lags(lags)

    # ------------------------------------------------------------------ worker

    def record_outputs(self, breaches: Iterable[Breach], actions: Iterable[Action], now_ms: int) -> None:
        """What one ``Engine``/``Shard`` step emitted: breaches by kind, actions by type, and the
        event-to-action latency of each action (``now_ms``, wall clock at emit, minus the action's
        ``event_time_ms``: how far behind the market the decision reached Kafka)."""
        for breach in breaches:
            self._breaches.labels(breach.kind.value, "cleared" if breach.cleared else "fired").inc()
        for action in actions:
            self._actions.labels(self.stage, action.action_type.value, "emitted").inc()
            self._event_to_action.observe(_seconds(now_ms - action.event_time_ms))

    def applied(self, count: int) -> None:
        """``count`` more records applied by the worker's engines."""
        self._applied.inc(count)

    def partition_stalled(self, partition: int, seconds: float | None) -> None:
        """The stall reading of an account partition held here; None: no longer held here."""
        if seconds is None:
            try:
                self._stalled.remove(str(partition))
            except KeyError:
                pass
        else:
            self._stalled.labels(str(partition)).set(seconds)

    def step(self, seconds: float) -> None:
        """How long one worker step took."""
        self._step.observe(max(0.0, seconds))

    # ------------------------------------------------------------------ executor

    def executed(self, action_type: str, outcome: str, created_ms: int | None, now_ms: int) -> None:
        """One action whose outcome (``executed`` or ``rejected``) is committed; ``created_ms`` is
        its Kafka message timestamp (None when the message has none: no latency observed)."""
        self._actions.labels(self.stage, action_type, outcome).inc()
        if created_ms is not None:
            self._action_to_execution.observe(_seconds(now_ms - created_ms))

    # ------------------------------------------------------------------ audit sink

    def rows_inserted(self, table: str, count: int) -> None:
        self._rows.labels(table).inc(count)

    def insert_error(self) -> None:
        self._insert_errors.inc()


def lags_from_statistics(stats: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    """Lag per assigned partition from librdkafka's statistics (its STATISTICS.md).

    Lag is the last stable offset (the end a ``read_committed`` consumer can reach, librdkafka's
    default isolation; the high watermark when no transaction is open) minus the position: the
    offset after the last message handed to the application, or, before any has been, the
    committed offset the consumer starts from. A partition with neither (a new group on a
    partition it has not read from yet) is left out: a gap in the series is honest, a guessed
    number is not. Partitions the consumer knows of but does not own are left out too.
    """
    lags: dict[tuple[str, int], int] = {}
    for topic, topic_stats in stats.get("topics", {}).items():
        for partition_id, p in topic_stats.get("partitions", {}).items():
            partition = int(partition_id)
            if partition < 0 or p["fetch_state"] in UNASSIGNED_FETCH_STATES:
                continue  # -1 is librdkafka's internal "unassigned" partition
            position = p["app_offset"] if p["app_offset"] >= 0 else p["committed_offset"]
            if position < 0 or p["ls_offset"] < 0:
                continue
            lags[(topic, partition)] = max(0, p["ls_offset"] - position)
    return lags


def _seconds(ms: float) -> float:
    return max(0.0, ms / 1000)
