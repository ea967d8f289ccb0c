"""The one wire mapping of the core's outputs: a ``Breach`` as its Avro ``Breach`` datum.

Actions and exposure snapshots leave the engine as their Avro datums already; breaches are typed
(``detect.breach.Breach``) and become records here, for the stream workers' topics and the
in-process audit alike.
"""

from __future__ import annotations

from typing import Any

from pipelines.detect.breach import Breach
from pipelines.engine.shards import ACCOUNT_BREACHES, market_subject


def breach_key(breach: Breach) -> str:
    """Account breaches are keyed by account; market breaches by their underlying."""
    return breach.subject if breach.kind in ACCOUNT_BREACHES else market_subject(breach.subject)


def breach_record(breach: Breach) -> dict[str, Any]:
    """The ``Breach`` datum of a core breach. A trigger is the ``topic:partition:offset`` of an
    input; refs of fed-back events (``feedback:account:sequence``) are kept as event ids at
    offset -1."""
    market = breach.kind not in ACCOUNT_BREACHES
    triggers = []
    for ref in breach.triggers:
        parts = ref.rsplit(":", 2)
        try:
            triggers.append({"topic": parts[0], "partition": int(parts[1]), "offset": int(parts[2]), "event_id": ref})
        except (IndexError, ValueError):
            triggers.append({"topic": parts[0], "partition": -1, "offset": -1, "event_id": ref})
    return {
        "breach_id": breach.breach_id, "kind": breach.kind.value,
        "account": breach_key(breach),
        "underlying": market_subject(breach.subject) if market else None,
        "instrument": breach.subject if market and "-" in breach.subject else None,
        "observed": float(breach.value), "threshold": float(breach.threshold),
        "severity": "critical" if breach.kind.value in ("equity_below_liquidation", "margin_shortfall") else "warning",
        "window_start_ms": breach.window_start_ms, "window_end_ms": breach.window_end_ms, "triggers": triggers,
        "details": {"level": str(breach.level), "cleared": "true" if breach.cleared else "false",
                    "subject": breach.subject},
        "event_time_ms": breach.event_time_ms,
    }
