"""Kafka client configuration shared by every shell (CLI, workers, executors, audit sink), all
confluent-kafka clients, from the one ``KafkaSettings``, so a secured cluster needs its settings
given once.

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


PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def client_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Config for a confluent-kafka Producer, Consumer or AdminClient: settings, then overrides."""
    if kafka.security_protocol.upper() not in PROTOCOLS:
        raise UserError(f"kafka.security_protocol {kafka.security_protocol!r}: expected PLAINTEXT, SSL, "
                        "SASL_PLAINTEXT or SASL_SSL")
    conf: dict[str, Any] = {**kafka.confluent_config(), "logger": LIBRDKAFKA_LOG}
    conf.update(overrides)
    return conf


