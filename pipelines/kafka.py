"""Kafka client configuration shared by every shell: confluent-kafka (CLI, executors, audit
sink, the workers' producers) and faust's aiokafka clients (the workers' consumers and tables),
both from the one ``KafkaSettings``, so a secured cluster needs its settings given once.

librdkafka logs a connection failure every few tens of milliseconds while a broker is down;
routed as is, that buries the one line that matters. Its log goes through a Python logger that
lets each distinct message through once per ``REPEAT_WINDOW_S``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from pipelines.config import KafkaSettings
from pipelines.errors import UserError

REPEAT_WINDOW_S = 30.0
_NUMBERS = re.compile(r"\d+")


class _RepeatFilter(logging.Filter):
    """Drops a record whose text was already let through within the window."""

    def __init__(self, window_s: float) -> None:
        super().__init__()
        self._window_s = window_s
        self._last_seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # librdkafka prefixes a "FAIL|client#..." tag; the text after it repeats, up to its numbers
        # ("after 301ms in state AUTH_REQ")
        text = _NUMBERS.sub("#", record.getMessage().split("]: ", 1)[-1])
        now = time.monotonic()
        last = self._last_seen.get(text)
        if last is not None and now - last < self._window_s:
            return False
        self._last_seen[text] = now
        return True


LIBRDKAFKA_LOG = logging.getLogger("backstop.librdkafka")
LIBRDKAFKA_LOG.addFilter(_RepeatFilter(REPEAT_WINDOW_S))


def client_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Config for a confluent-kafka Producer, Consumer or AdminClient: settings, then overrides."""
    conf: dict[str, Any] = {**kafka.confluent_config(), "logger": LIBRDKAFKA_LOG}
    conf.update(overrides)
    return conf


def faust_credentials(kafka: KafkaSettings) -> Any:
    """``broker_credentials`` for a faust app: the same protocol, mechanism, user and CA file the
    confluent-kafka clients get; None for PLAINTEXT."""
    import ssl

    import faust

    protocol = kafka.security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol not in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise UserError(f"kafka.security_protocol {kafka.security_protocol!r}: expected PLAINTEXT, SSL, "
                        "SASL_PLAINTEXT or SASL_SSL")
    context = ssl.create_default_context(cafile=kafka.ssl_cafile or None) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(username=kafka.sasl_username, password=kafka.sasl_password,
                                 mechanism=kafka.sasl_mechanism or "PLAIN", ssl_context=context)
