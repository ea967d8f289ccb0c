"""The executor: a confluent-kafka consumer group on the action topic that carries actions out
against a venue exactly once.

Exactly once, in two halves:
- **Kafka side** — each batch is one Kafka transaction: the execution reports, the dead
  letters and the consumed offsets commit together (``send_offsets_to_transaction``), and
  consumers read reports with ``read_committed``. An executor killed mid-batch leaves an aborted
  transaction: no report of it is ever seen, and its actions are delivered again.
- **Venue side** — every venue call that trades carries a client order id derived from the
  action id, and the venue answers a repeated id with the order it already has instead of trading
  again (the simulated venue keeps that ledger in SQLite; real exchanges do it with client order
  ids). So the redelivered action finds its fill and reports it; it is not executed twice. A
  trading-state action (halt, market reduce-only, resume, a delisting's halt) carries its action
  id and event time: the venue answers a repeated id as it did the first time, and applies a
  state only if it is newer than the state of record for that name, so a redelivered or re-sent
  older action never undoes a later one (reported ``accepted`` with a ``stale: ...`` reason).

A transactional call that blocks past its own timeout ends the process (exit code
``pipelines.kafka.EXIT_STUCK``): librdkafka's ``send_offsets_to_transaction`` can hang for good when the group
coordinator goes away mid-transaction (librdkafka issues #5456 and #5511). A restarted executor
fences the open transaction (same ``transactional.id``) and redoes the batch, which the venue's
client order ids make safe: the watchdog turns a hang into the crash the design recovers from
(docs/decisions/0010-executor-watchdog.md).

Transient venue errors are retried with exponential backoff; past ``max_retry_s`` the batch is
aborted and consumption rewinds to the last commit, so nothing is lost. Actions that cannot be
decoded, carry a bad signature, have expired, or that the venue refuses for good are reported
as rejected and dead-lettered; a bad signature is also logged as an alert. SIGTERM finishes the
current batch, commits and exits.

Observability (``pipelines.ops``): a committed batch is counted and logged action by action —
one log line per action with its id, breach ids, account and Kafka coordinates — only after its
transaction commits, so an aborted, redelivered batch is neither counted nor logged twice.
Consumer lag comes from librdkafka's statistics (``Metrics.consumer_config``, wired in by the
command); ``ready()`` answers ``/readyz``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from pipelines.engine.wire import WireError, action_from_record, record_target, signed_fields
from pipelines.events.codec import Codec, DecodeError
from pipelines.events.deadletter import dead_letter, message_timestamp_ms
from pipelines.events.validation import Validator
from pipelines.execution.market import MarketFeed
from pipelines.execution.venue import Order, StateChange, Venue, VenueError
from pipelines.execution.waterfall import WaterfallResult
from pipelines.kafka import Watchdog, exit_stuck
from pipelines.ops.metrics import Metrics
from pipelines.policy.actions import Action, ActionType
from pipelines.policy.circuit import STATE_OF_ACTION, TradingState
from pipelines.policy.signing import SigningKey

log = logging.getLogger(__name__)

STUCK_GRACE_S = 5.0  # past a call's own timeout, before the watchdog fires
# the Action schema's value checks (quantities, prices, instruments); expiry is checked apart,
# so any event time is accepted here: a replayed action is hours old by design
ACTION_VALUES = Validator(max_past_ms=2**62, max_future_ms=2**62)

RISK_FREE_TYPES = {ActionType.MARGIN_CALL, ActionType.REDUCE_ONLY}
WATERFALL_STEPS = {
    ActionType.PARTIAL_LIQUIDATION: "all",
    ActionType.FULL_LIQUIDATION: "all",
    ActionType.TRANSFER_TO_LP: "lp",
    ActionType.INSURANCE_FUND: "fund",
    ActionType.AUTO_DELEVERAGE: "fund",
}


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    actions_topic: str
    executions_topic: str
    dead_letter_topic: str
    batch_size: int = 200
    poll_timeout_s: float = 0.2
    max_retry_s: float = 30.0
    first_backoff_s: float = 0.1
    offsets_timeout_s: float = 15.0
    commit_timeout_s: float = 30.0


@dataclasses.dataclass
class ExecutorStats:
    actions: int = 0
    reports: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    aborted_batches: int = 0


class Rejected(Exception):
    """An action that will never execute: reported as rejected and dead-lettered."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class _Handled:
    """What one message came to, kept until its batch commits."""

    message: Message
    action: dict[str, Any] | None  # the decoded datum; None: undecodable
    outcome: str  # executed, rejected or undecodable
    reason: str | None = None  # the dead-letter reason, when dead-lettered


class Executor:
    def __init__(self, consumer: Consumer, producer: Producer, codec: Codec, venue: Venue, key: SigningKey,
                 config: ExecutorConfig, clock: Callable[[], float] = time.time,
                 metrics: Metrics | None = None, on_stuck: Callable[[str], None] | None = None,
                 market: MarketFeed | None = None) -> None:
        """``market``: the feed of the venue's depth and marks, read before the first action and
        brought up to date before every batch; None: the venue keeps the books it has."""
        self.consumer, self.producer, self.codec, self.venue = consumer, producer, codec, venue
        self.market = market
        self.key, self.config, self.clock = key, config, clock
        self.on_stuck = on_stuck or exit_stuck
        self.metrics = metrics or Metrics("executor")
        self.stats = ExecutorStats()
        self._stop = threading.Event()
        self._member = False  # of the consumer group: set by the first assignment, cleared when lost or done

    # ------------------------------------------------------------------ loop

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def ready(self) -> bool:
        """For ``/readyz``: a member of the group and not stopping. An empty assignment counts: an
        executor in a group larger than the partition count is a healthy standby, not a failure."""
        return self._member and not self._stop.is_set()

    def _joined(self, *_: Any) -> None:
        self._member = True

    def _lost(self, *_: Any) -> None:
        self._member = False

    def run(self, max_actions: int | None = None, idle_exit_s: float | None = None) -> ExecutorStats:
        """Consume until stopped (SIGTERM/SIGINT), ``max_actions`` handled, or idle for ``idle_exit_s``.

        Idleness counts only while a member of the group, so a slow first join (a broker still loading
        its group coordinator) is not mistaken for an empty action topic."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.producer.init_transactions(30)
        if self.market is not None:
            self.market.start()
        self.consumer.subscribe([self.config.actions_topic], on_assign=self._joined, on_lost=self._lost)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = []
                for m in self.consumer.consume(self.config.batch_size, self.config.poll_timeout_s):
                    if m.error() is None:
                        messages.append(m)
                    elif m.error().fatal():
                        raise KafkaException(m.error())
                    else:
                        log.warning("consumer: %s", m.error().str())
                if messages or not self._member:
                    idle_since = time.monotonic()
                if not messages:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                if self.market is not None:
                    self.market.poll()  # the books and marks as they stand now, before any action of the batch
                self._process_batch(messages)
                if max_actions is not None and self.stats.actions >= max_actions:
                    break
        finally:
            self._member = False
            self.consumer.close()
            if self.market is not None:
                self.market.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.stats

    def _process_batch(self, messages: list[Message]) -> None:
        self.producer.begin_transaction()
        try:
            handled = [self._handle(message) for message in messages]
            with Watchdog("send_offsets_to_transaction", self.config.offsets_timeout_s + STUCK_GRACE_S, self.on_stuck):
                self.producer.send_offsets_to_transaction(
                    _next_offsets(messages), self.consumer.consumer_group_metadata(), self.config.offsets_timeout_s)
            with Watchdog("commit_transaction", self.config.commit_timeout_s + STUCK_GRACE_S, self.on_stuck):
                self.producer.commit_transaction(self.config.commit_timeout_s)
            self.stats.actions += len(messages)
        except _GiveUp as exc:
            log.warning("venue unavailable for %.0fs (%s); aborting the batch and rewinding",
                        self.config.max_retry_s, exc)
            self._abort_and_rewind(messages)
            return
        self._record(handled)

    def _record(self, handled: list[_Handled]) -> None:
        """Count and log a committed batch.

        Action-to-execution latency runs from the action message's Kafka timestamp to now, the
        commit, when the reports become visible to ``read_committed`` readers. Not from the
        action's ``event_time_ms``: schemas/Action.avsc makes that the *event time of the
        decision*, the time of the market and position events behind it, on the venue's clock
        and hours old in a replay; latency from it would repeat the worker's event-to-action
        latency and show every replay as an outage. The Kafka timestamp (CreateTime, set by the
        worker's producer as it sent the action) is when the action came to exist, so the
        executor's leg is measured alone and event-to-action plus action-to-execution add up to
        the whole chain, no part counted twice.
        """
        now_ms = int(self.clock() * 1000)
        for h in handled:
            m = h.message
            where = {"topic": m.topic(), "partition": m.partition(), "offset": m.offset()}
            self.metrics.consumed(m.topic())
            if h.reason is not None:
                self.metrics.dead_letter(h.reason)
            if h.action is None:
                log.warning("undecodable message %s[%d]@%d dead-lettered: %s", m.topic(), m.partition(), m.offset(),
                            h.reason, extra={**where, "reason": h.reason})
                continue
            a = h.action
            self.metrics.executed(a["action_type"], h.outcome, message_timestamp_ms(m), now_ms)
            log.log(logging.WARNING if h.reason else logging.INFO, "action %s %s: %s for %s%s", a["action_id"],
                    h.outcome, a["action_type"], record_target(a), f" ({h.reason})" if h.reason else "",
                    extra={"action_id": a["action_id"], "breach_ids": a["breach_ids"], "account": a["account"],
                           "action_type": a["action_type"], "outcome": h.outcome, "reason": h.reason, **where})

    def _abort_and_rewind(self, messages: list[Message]) -> None:
        self.producer.abort_transaction(30)
        self.stats.aborted_batches += 1
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            first.setdefault((m.topic(), m.partition()), m.offset())
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    # ------------------------------------------------------------------ one action

    def _handle(self, message: Message) -> _Handled:
        try:
            record = self.codec.decode(message.value(), expected="Action").value
        except DecodeError as exc:
            self._dead_letter(message, exc.reason, str(exc))
            return _Handled(message, None, "undecodable", exc.reason)
        handled = _Handled(message, record, "executed")
        try:
            reports = self._execute(self._verify(record))
        except Rejected as exc:
            if exc.reason == "bad_signature":
                log.error("ALERT forged or corrupted action %s for %s rejected (key id %r)",
                          record["action_id"], record_target(record), record.get("signing_key_id"))
            self._dead_letter(message, exc.reason, str(exc))
            reports = [self._report_of(record["action_id"], record_target(record), record.get("instrument"),
                                       record.get("side"), 0, status="rejected", reason=f"{exc.reason}: {exc}")]
            self.stats.rejected += 1
            handled = _Handled(message, record, "rejected", exc.reason)
        for report in reports:
            self.producer.produce(self.config.executions_topic, key=message.key(),
                                  value=self.codec.encode("ExecutionReport", report))
        self.stats.reports += len(reports)
        return handled

    def _verify(self, record: dict[str, Any]) -> Action:
        """The ``Action`` of a decoded datum that is signed by our key, sane, unexpired and of a
        known type and target; else raise ``Rejected``. The signature is checked first."""
        signature = record.get("signature")
        if not signature or not self.key.verify(signed_fields(record), signature):
            raise Rejected("bad_signature", "signature missing or invalid")
        now_ms = self.clock() * 1000
        # signed is not sane: a worker bug must not reach the venue as a NaN or negative order
        problem = ACTION_VALUES.validate("Action", record, int(now_ms))
        if problem is not None:
            raise Rejected(problem.reason, str(problem))
        expires = record.get("expires_at_ms")
        if expires is not None and now_ms > expires:
            raise Rejected("expired", f"expired at {expires}")
        try:
            return action_from_record(record)
        except WireError as exc:
            raise Rejected(exc.reason, str(exc)) from None

    def _execute(self, action: Action) -> list[dict[str, Any]]:
        kind = action.action_type
        if kind in RISK_FREE_TYPES:
            return [self._report(action, 0, status="accepted")]
        if kind in STATE_OF_ACTION:
            return [self._state_report(action, action.instrument or action.target, STATE_OF_ACTION[kind])]
        if kind is ActionType.DELTA_HEDGE:
            return [self._order_report(action)]
        if kind is ActionType.FREEZE_WITHDRAWALS:
            reason = action.params.get("reason", "freeze_withdrawals")
            self._with_retry(lambda: self.venue.freeze_withdrawals(action.target, reason))
            return [self._report(action, 0, status="accepted")]
        if kind is ActionType.DELIST_SETTLE:  # halted here; settling its positions is the venue operator's act
            return [self._state_report(action, _required(action, "instrument"), TradingState.HALTED)]
        return self._liquidation_reports(action, WATERFALL_STEPS[kind])

    def _state_report(self, action: Action, name: str, state: TradingState) -> dict[str, Any]:
        """Set ``name``'s trading state as of the action's event time. ``accepted`` either way; a
        stale action (the venue's state of record is newer) moves nothing and says so in ``reason``."""
        change: StateChange = self._with_retry(lambda: self.venue.set_trading_state(
            name, state, action.event_time_ms, action.action_id))
        if not change.applied:
            log.warning("action %s (%s %s) not applied: %s", action.action_id, action.action_type, name, change.reason)
        return self._report(action, 0, status="accepted", reason=change.reason or None)

    def _order_report(self, action: Action) -> dict[str, Any]:
        order = Order(action.action_id, action.target, _required(action, "instrument"),
                      _required(action, "side"), action.quantity, action.limit_price)
        result = self._with_retry(lambda: self.venue.place_order(order))
        if result.status == "rejected":
            raise Rejected("venue_rejected", result.reason)
        return self._report(action, 0, status=result.status, filled=result.filled, price=result.avg_price,
                            fee=result.fee_usd, slippage=result.slippage_bps, venue=self.venue.name,
                            counterparty="book")

    def _liquidation_reports(self, action: Action, steps: str) -> list[dict[str, Any]]:
        params = action.params
        try:
            mark, equity = float(params["mark"]), float(params["equity_usd"])
        except (KeyError, ValueError):
            raise Rejected("missing_params", "liquidation actions need params mark and equity_usd") from None
        if not (math.isfinite(mark) and mark > 0 and math.isfinite(equity)):
            raise Rejected("bad_params", f"mark {params['mark']!r} must be a positive number and equity_usd "
                                         f"{params['equity_usd']!r} a finite one")
        signed = action.quantity if action.side == "sell" else -action.quantity  # the position closed
        partial = action.action_type in (ActionType.PARTIAL_LIQUIDATION, ActionType.TRANSFER_TO_LP)
        result: WaterfallResult = self._with_retry(lambda: self.venue.liquidate(
            action.action_id, action.target, _required(action, "instrument"), signed, mark, equity,
            action.event_time_ms, steps, close_all=not partial))
        if not result.fills:  # still one report: the audit must say what became of every action
            return [self._report(action, 0, status="rejected", venue=self.venue.name,
                                 reason=f"no counterparty in {steps}: {result.unfilled:g} left with the account")]
        closed = sum(fill.quantity for fill in result.fills)
        status = "filled" if closed >= abs(signed) * (1 - 1e-9) else "partially_filled"
        venue_of = {"book": self.venue.name, "lp": "lp", "insurance_fund": "insurance_fund", "adl": "adl"}
        return [self._report(action, i, status=status, filled=fill.quantity, price=fill.price, fee=fill.fee_usd,
                             slippage=fill.slippage_bps, venue=venue_of[fill.step], counterparty=fill.counterparty)
                for i, fill in enumerate(result.fills)]

    def _with_retry(self, call: Callable[[], Any]) -> Any:
        delay, deadline = self.config.first_backoff_s, time.monotonic() + self.config.max_retry_s
        while True:
            try:
                return call()
            except VenueError as exc:
                if not exc.transient:
                    raise Rejected("venue_rejected", str(exc)) from None
                if time.monotonic() + delay > deadline or self._stop.is_set():
                    raise _GiveUp(str(exc)) from None
                log.info("transient venue error (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _report(self, action: Action, seq: int, **outcome: Any) -> dict[str, Any]:
        """The ``seq``-th ``ExecutionReport`` of ``action``, keyed as the action is (``account`` is its target)."""
        return self._report_of(action.action_id, action.target, action.instrument, action.side, seq, **outcome)

    def _report_of(self, action_id: str, account: str, instrument: str | None, side: str | None, seq: int, *,
                   status: str, filled: float = 0.0, price: float | None = None, fee: float = 0.0,
                   slippage: float | None = None, venue: str = "", counterparty: str = "",
                   reason: str | None = None) -> dict[str, Any]:
        return {
            "execution_id": f"{action_id}/{seq}",
            "action_id": action_id,
            "account": account,
            "status": status,
            "venue": venue or self.venue.name,
            "instrument": instrument,
            "side": side,
            "filled_quantity": filled,
            "avg_price": price,
            "fee": fee,
            "fee_currency": "USD",
            "slippage_bps": slippage,
            "counterparty": counterparty,
            "reason": reason,
            "event_time_ms": int(self.clock() * 1000),
        }

    def _dead_letter(self, message: Message, reason: str, detail: str) -> None:
        record = dead_letter(reason=reason, detail=detail, topic=message.topic(), partition=message.partition(),
                             offset=message.offset(), value=message.value(), key=message.key(),
                             message_timestamp_ms=message_timestamp_ms(message), consumer="executor",
                             event_time_ms=int(self.clock() * 1000))
        self.producer.produce(self.config.dead_letter_topic, key=message.topic().encode(),
                              value=self.codec.encode("DeadLetter", record))
        self.stats.dead_lettered += 1


class _GiveUp(Exception):
    """The venue stayed unavailable past the retry budget."""


def _required(action: Action, field: str) -> Any:
    value = getattr(action, field)
    if not value:
        raise Rejected("missing_field", f"{action.action_type} needs {field}")
    return value


def _next_offsets(messages: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic(), m.partition())] = max(last.get((m.topic(), m.partition()), -1), m.offset())
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]
