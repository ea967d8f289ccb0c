"""``backstop topics create`` and ``backstop topics list``: apply and show the topic catalogue."""

from __future__ import annotations

import argparse
import dataclasses
import time

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from pipelines.config import KafkaSettings, load_settings
from pipelines.errors import UserError
from pipelines.kafka import client_config
from pipelines.topics import CATALOGUE, topic_name

ADMIN_TIMEOUT_S = 15.0
CREATE_ATTEMPTS = 3
LEADERS_TIMEOUT_S = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    topics = subparsers.add_parser("topics", help="create or list the Kafka topics in the catalogue")
    sub = topics.add_subparsers(dest="topics_command", metavar="ACTION")
    sub.required = True
    create = sub.add_parser("create", help="create every catalogue topic that is missing (idempotent)")
    create.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    create.set_defaults(func=run_create)
    listing = sub.add_parser("list", help="show the catalogue and what the broker has")
    listing.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    listing.set_defaults(func=run_list)


def _kafka(args: argparse.Namespace) -> KafkaSettings:
    kafka = load_settings(args.config).kafka
    if args.bootstrap:
        kafka = dataclasses.replace(kafka, bootstrap=args.bootstrap)
    return kafka


def broker_topics(kafka: KafkaSettings, timeout_s: float = ADMIN_TIMEOUT_S) -> tuple[AdminClient, dict[str, int]]:
    """An admin client and the broker's topics; a broker that cannot be used within ``timeout_s``
    is a ``UserError`` naming librdkafka's own reason (a refused SASL login, not just "transport
    failure"). The client does not log (``log_level`` 0): its errors reach the user as that one
    line, or as the exceptions of the calls made with it."""
    reasons: list[str] = []
    admin = AdminClient(client_config(kafka, error_cb=lambda error: reasons.append(error.str()), log_level=0))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callbacks queued meanwhile
        cause = next((r for r in reversed(reasons) if "authentication" in r.lower()), reasons[-1] if reasons else "")
        raise UserError(f"cannot reach Kafka at {kafka.bootstrap}: {exc.args[0].str()}"
                        + (f" ({cause})" if cause else "")) from None
    return admin, {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def create_topics(kafka: KafkaSettings, leaders_timeout_s: float = LEADERS_TIMEOUT_S) -> list[tuple[str, str]]:
    """Create the missing catalogue topics and return (topic, outcome) per catalogue entry, once
    the leader of every catalogue partition serves it (``wait_for_leaders``: see there why).

    A CreateTopics that fails inside librdkafka (a local error, such as "Broker handle destroyed
    without termination", seen on a cluster started seconds before) is tried again: the
    controller may have carried it out, and creating is idempotent. A broker's refusal (an
    invalid replication factor, say) is final and reported at once."""
    admin, existing = broker_topics(kafka)
    outcomes: dict[str, str] = {}
    missing = []
    for spec in CATALOGUE:
        name = topic_name(spec, kafka.topic_prefix)
        if name in existing:
            outcome = "exists"
            if existing[name] != spec.partitions:
                outcome = f"exists with {existing[name]} partitions (catalogue: {spec.partitions}; not changed)"
            outcomes[name] = outcome
        else:
            missing.append(spec)
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        retry = []
        by_name = {topic_name(spec, kafka.topic_prefix): spec for spec in missing}
        new_topics = [NewTopic(name, num_partitions=spec.partitions, replication_factor=kafka.replication_factor,
                               config=spec.config(kafka.replication_factor)) for name, spec in by_name.items()]
        futures = admin.create_topics(new_topics, operation_timeout=ADMIN_TIMEOUT_S) if new_topics else {}
        for name, future in futures.items():
            try:
                future.result()
                outcomes.setdefault(name, "created")
            except KafkaException as exc:
                error = exc.args[0]
                if error.name() == "TOPIC_ALREADY_EXISTS":  # another process, or an earlier attempt, made it
                    outcomes.setdefault(name, "exists" if attempt == 1 else "created")
                # a negative code is librdkafka's own failure, not the broker's answer
                elif error.code() < 0 and attempt < CREATE_ATTEMPTS:
                    retry.append(by_name[name])
                else:
                    raise UserError(f"cannot create topic {name}: {error.str()}") from None
        if not retry:
            break
        missing = retry
        time.sleep(1.0)
    wait_for_leaders(admin, list(outcomes), leaders_timeout_s)
    order = {topic_name(spec, kafka.topic_prefix): i for i, spec in enumerate(CATALOGUE)}
    return sorted(outcomes.items(), key=lambda item: order[item[0]])


def wait_for_leaders(admin: AdminClient, topics: list[str], timeout_s: float) -> None:
    """Return once the leader of every partition of ``topics`` answers for it (a ListOffsets,
    which only the serving leader answers); raise a ``UserError`` naming the laggards otherwise.

    Invariant: nothing produces to a topic before this returned for it. A just-created
    partition can refuse a producer's first request (NOT_LEADER_OR_FOLLOWER) and take the next,
    pipelined one, and librdkafka then reports the refused messages delivered
    (confluent-kafka-go #921): acked, never written. Why and what it cost:
    docs/decisions/0008-leaders-before-producing.md."""
    deadline, failing = time.monotonic() + timeout_s, ["no metadata yet"]
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        failing = [f"{t}: not in the metadata yet" for t in topics if t not in metadata or metadata[t].error]
        partitions = [TopicPartition(t, p) for t in topics if t in metadata and metadata[t].error is None
                      for p in metadata[t].partitions]
        if partitions:
            answers = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions},
                                         request_timeout=ADMIN_TIMEOUT_S)
            for tp, future in answers.items():
                try:
                    future.result()
                except KafkaException as exc:
                    failing.append(f"{tp.topic}[{tp.partition}]: {exc.args[0].str()}")
        if not failing:
            return
        time.sleep(0.2)
    raise UserError(f"topic partitions without a serving leader after {timeout_s:.0f} s: "
                    f"{'; '.join(failing[:5])}" + (f" (and {len(failing) - 5} more)" if len(failing) > 5 else ""))


def run_create(args: argparse.Namespace) -> int:
    kafka = _kafka(args)
    for name, outcome in create_topics(kafka):
        print(f"{name:<32} {outcome}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    kafka = _kafka(args)
    _, existing = broker_topics(kafka)
    print(f"{'topic':<32} {'partitions':>10} {'cleanup':<8} {'key':<11} {'value':<21} broker")
    for spec in CATALOGUE:
        name = topic_name(spec, kafka.topic_prefix)
        on_broker = f"{existing[name]} partitions" if name in existing else "missing"
        print(f"{name:<32} {spec.partitions:>10} {spec.cleanup_policy:<8} {spec.key:<11} {spec.value_record:<21} "
              f"{on_broker}")
    return 0
