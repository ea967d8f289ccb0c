"""Kafka client configuration shared by every shell (CLI, workers, executors, audit sink), all
confluent-kafka clients, from the one ``KafkaSettings``, so a secured cluster needs its settings
given once.

librdkafka logs a connection failure every few tens of milliseconds while a broker is down;
routed as is, that buries the one line that matters. Its log goes through a Python logger that
lets each distinct message through once per ``REPEAT_WINDOW_S``.

Some of its blocking calls can outlive any timeout when the group coordinator goes away (the
executor's transactional calls, librdkafka issues #5456 and #5511; the audit sink's synchronous
offset commit across a restart of the only broker): ``Watchdog`` turns such a hang into an exit
with ``EXIT_STUCK``, which a supervisor's restart recovers from (docs/decisions/0010).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from pipelines.config import KafkaSettings
from pipelines.errors import UserError

REPEAT_WINDOW_S = 30.0
EXIT_STUCK = 75  # EX_TEMPFAIL: a supervisor's restart is the remedy
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


class Watchdog:
    """Calls ``on_stuck(what)`` from a timer thread if the ``with`` block is still running after
    ``after_s`` (confluent-kafka releases the GIL inside its blocking calls, so the timer runs)."""

    def __init__(self, what: str, after_s: float, on_stuck: Callable[[str], None]) -> None:
        self._timer = threading.Timer(after_s, on_stuck, args=(what,))
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def exit_stuck(what: str) -> None:
    """The default ``on_stuck`` of the shells that use a ``Watchdog``: say why, then end the
    process at once (no cleanup that could block on the same stuck client)."""
    logging.getLogger(__name__).critical("%s blocked past its deadline: exiting with %d so a restart takes over",
                                         what, EXIT_STUCK)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_STUCK)
