"""A shard's snapshot as the market ticks on: its size and the time to write it, past the hour.

    .venv/bin/python bench/bench_snapshot.py [--quick] [--minutes N] [--rate R] [--out F]

A worker writes each shard's snapshot every ``--snapshot-every`` records, on its event loop,
and the changelog refuses one above 16 MB (``SNAPSHOT_MAX_BYTES``). The state that looks back
in time — the index-move detector's hour, the index history's five minutes — is bucketed so
that neither the tick rate nor the uptime grows it (docs/architecture.md). The load: one shard
holding 100 accounts, then index ticks for 21 underlyings at ``rate`` a second in a steady fall
(every tick a new low, the worst case for a window of highs). Baseline, in the same run: the
same ticks kept one by one, as the windows did before (time, value and the event's reference
per tick of the hour, and time, price and squared return per tick of the five minutes),
compressed the way a snapshot is. Writes bench/results/snapshot.json.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import pickle
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_worker import book_events, index_value  # noqa: E402

from pipelines.detect.windows import Sample  # noqa: E402
from pipelines.engine.index_history import REALISED_WINDOW_MS  # noqa: E402
from pipelines.engine.shard import SNAPSHOT_FORMAT, Message, Shard  # noqa: E402
from pipelines.policy.signing import SigningKey  # noqa: E402
from pipelines.scenarios.generate import T0  # noqa: E402

UNDERLYINGS = [f"U{i:02d}" for i in range(21)]
HOUR_MS = 3_600_000


def compressed(state: object) -> bytes:
    """Pickled and compressed as ``Shard.snapshot`` does it."""
    return zlib.compress(pickle.dumps(state, pickle.HIGHEST_PROTOCOL), 1)


def timed(write) -> tuple[int, float]:  # noqa: ANN001
    """Bytes written and the best of three times to write them, in ms."""
    best, size = math.inf, 0
    for _ in range(3):
        started = time.perf_counter()
        size = len(write())
        best = min(best, time.perf_counter() - started)
    return size, best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 minutes at 100 ticks/s")
    parser.add_argument("--minutes", type=int, default=65, help="minutes of ticks (past the detectors' hour)")
    parser.add_argument("--rate", type=int, default=300, help="index ticks per second, over all underlyings")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "snapshot.json")
    args = parser.parse_args()
    minutes, rate = (2, 100) if args.quick else (args.minutes, args.rate)

    shard = Shard(0, 12, SigningKey("bench", b"bench-signing-key-000"))
    offsets: dict[str, int] = {}

    def push(topic: str, record: str, value: dict) -> None:
        name = f"{topic}/0"
        offset = offsets[name] = offsets.get(name, -1) + 1
        shard.push(Message(name, offset, f"{topic}:0:{offset}", record, value))

    for topic, _key, record, value in book_events(100):
        push(topic, record, value)
    for name in shard.inputs:
        shard.idle(name)
    kept: dict[str, list[list]] = {u: [[], [], []] for u in UNDERLYINGS}  # the hour, tick by tick
    history: dict[str, list[list]] = {u: [[], [], []] for u in UNDERLYINGS}  # the five minutes
    rows, tick, ticks = [], 0, minutes * 60 * rate
    started = time.perf_counter()
    for second in range(1, minutes * 60 + 1):
        for _ in range(rate):
            t, underlying = T0 + 1_000 + tick * 1_000 // rate, UNDERLYINGS[tick % len(UNDERLYINGS)]
            price = 100.0 * (1 - 0.5 * tick / ticks)  # half its value over the run
            push("backstop.market.index", "IndexPrice", index_value(t, price, underlying))
            for column, item in zip(kept[underlying], (t, price, Sample(t, price, f"backstop.market.index:0:{tick}"))):
                column.append(item)
            prices = history[underlying][1]
            squared = math.log(price / prices[-1]) ** 2 if prices else 0.0
            for column, item in zip(history[underlying], (t, price, squared)):
                column.append(item)
            tick += 1
        shard.advance()
        minute, into = divmod(second, 60)
        if not into and (minute == 1 or minute % 5 == 0 or minute == minutes):
            now = T0 + 1_000 + tick * 1_000 // rate
            for lists, span in ((kept, HOUR_MS), (history, REALISED_WINDOW_MS)):
                for columns in lists.values():
                    cut = bisect.bisect_left(columns[0], now - span)
                    for column in columns:
                        del column[:cut]
            size, ms = timed(shard.snapshot)
            kept_size, kept_ms = timed(lambda: compressed((kept, history)))
            rows.append({"minute": minute, "snapshot_bytes": size, "snapshot_ms": round(ms, 2),
                         "kept_bytes": kept_size, "kept_ms": round(kept_ms, 2)})
            print(f"minute {minute:3d}: snapshot {size / 1e3:8.1f} kB in {ms:6.1f} ms; ticks kept one by one "
                  f"{kept_size / 1e3:9.1f} kB in {kept_ms:7.1f} ms   ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    result = {"underlyings": len(UNDERLYINGS), "accounts": 100, "rate_per_s": rate, "minutes": minutes,
              "snapshot_format": SNAPSHOT_FORMAT, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
