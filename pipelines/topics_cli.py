"""``backstop topics create`` and ``backstop topics list``: apply and show the topic catalogue."""

from __future__ import annotations

import argparse
import dataclasses

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.config import KafkaSettings, load_settings
from pipelines.errors import UserError
from pipelines.kafka import client_config
from pipelines.topics import CATALOGUE, topic_name

ADMIN_TIMEOUT_S = 15.0


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


def _existing(kafka: KafkaSettings) -> tuple[AdminClient, dict[str, int]]:
    """An admin client and the broker's topics; a broker that cannot be used is a ``UserError``
    naming librdkafka's own reason (a refused SASL login, not just "transport failure")."""
    reasons: list[str] = []
    admin = AdminClient(client_config(kafka, error_cb=lambda error: reasons.append(error.str())))
    try:
        metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callbacks queued meanwhile
        cause = next((r for r in reversed(reasons) if "authentication" in r.lower()), reasons[-1] if reasons else "")
        raise UserError(f"cannot reach Kafka at {kafka.bootstrap}: {exc.args[0].str()}"
                        + (f" ({cause})" if cause else "")) from None
    return admin, {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def create_topics(kafka: KafkaSettings) -> list[tuple[str, str]]:
    """Create the missing catalogue topics; return (topic, outcome) per catalogue entry."""
    admin, existing = _existing(kafka)
    outcomes: list[tuple[str, str]] = []
    new_topics = []
    for spec in CATALOGUE:
        name = topic_name(spec, kafka.topic_prefix)
        if name in existing:
            outcome = "exists"
            if existing[name] != spec.partitions:
                outcome = f"exists with {existing[name]} partitions (catalogue: {spec.partitions}; not changed)"
            outcomes.append((name, outcome))
        else:
            new_topics.append(NewTopic(name, num_partitions=spec.partitions,
                                       replication_factor=kafka.replication_factor,
                                       config=spec.config(kafka.replication_factor)))
    futures = admin.create_topics(new_topics, operation_timeout=ADMIN_TIMEOUT_S) if new_topics else {}
    for name, future in futures.items():
        try:
            future.result()
            outcomes.append((name, "created"))
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() == "TOPIC_ALREADY_EXISTS":  # another process created it meanwhile
                outcomes.append((name, "exists"))
            else:
                raise UserError(f"cannot create topic {name}: {error.str()}") from None
    order = {topic_name(spec, kafka.topic_prefix): i for i, spec in enumerate(CATALOGUE)}
    return sorted(outcomes, key=lambda item: order[item[0]])


def run_create(args: argparse.Namespace) -> int:
    kafka = _kafka(args)
    for name, outcome in create_topics(kafka):
        print(f"{name:<32} {outcome}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    kafka = _kafka(args)
    _, existing = _existing(kafka)
    print(f"{'topic':<32} {'partitions':>10} {'cleanup':<8} {'key':<11} {'value':<21} broker")
    for spec in CATALOGUE:
        name = topic_name(spec, kafka.topic_prefix)
        on_broker = f"{existing[name]} partitions" if name in existing else "missing"
        print(f"{name:<32} {spec.partitions:>10} {spec.cleanup_policy:<8} {spec.key:<11} {spec.value_record:<21} {on_broker}")
    return 0
