"""confluent-kafka client configuration shared by every shell (CLI, executors, audit sink).

librdkafka logs a connection failure every few tens of milliseconds while a broker is down;
routed as is, that buries the one line that matters. Its log goes through a Python logger that
lets each distinct message through once per ``REPEAT_WINDOW_S``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipelines.config import KafkaSettings

REPEAT_WINDOW_S = 30.0


class _RepeatFilter(logging.Filter):
    """Drops a record whose text was already let through within the window."""

    def __init__(self, window_s: float) -> None:
        super().__init__()
        self._window_s = window_s
        self._last_seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # librdkafka prefixes a millisecond timestamp-free "FAIL|client#..." tag; the text after it repeats
        text = record.getMessage().split("]: ", 1)[-1]
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
