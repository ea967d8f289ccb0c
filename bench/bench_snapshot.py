"""A worker's checkpoint as the market ticks on: its size and the time to write it, past the hour.

    .venv/bin/python bench/bench_snapshot.py [--quick] [--minutes N] [--rate R] [--out F]

Every ``checkpoint_ms`` a worker parks each lane at a tick boundary and writes, per account
partition it holds, one checkpoint: the partition's accounts and the market side, Avro and
compressed (``pipelines/engine/snapshot.py``), encoded on its loop while the lane waits; the
checkpoint topic refuses one above 16 MB (``CHECKPOINT_MAX_BYTES``). The state that looks back
in time — the index-move detector's hour, the index history's five minutes — is bucketed so
that neither the tick rate nor the uptime grows it (docs/architecture.md). The load: a lane
holding the one account partition of 100 accounts, then index ticks for 21 underlyings at
``rate`` a second in a steady fall (every tick a new low, the worst case for a window of highs);
at each measured minute the lane is cut and parked at the next tick boundary, and its
checkpoints are taken and encoded (``Lane.checkpoints``, ``encode_checkpoint``). Baseline, in
the same run: the same ticks kept one by one, as the windows did before (time, value and the
event's reference per tick of the hour, and time, price and squared return per tick of the five
minutes), encoded the way a checkpoint is (schemaless Avro, zlib level 1). Writes
bench/results/snapshot.json.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import fastavro

from pipelines.engine.engine import EngineParams
from pipelines.engine.index_history import REALISED_WINDOW_MS
from pipelines.engine.shard import Message
from pipelines.engine.snapshot import FORMAT, encode_checkpoint
from pipelines.policy.signing import SigningKey
from pipelines.scenarios.generate import T0
from pipelines.topics import CHECKPOINT_MAX_BYTES
from pipelines.worker.lane import Lane

UNDERLYINGS = [f"U{i:02d}" for i in range(21)]
ACCOUNTS = 100
HOUR_MS = 3_600_000
INDEX = "backstop.market.index"


def book_events(accounts: int) -> list[tuple[str, str, dict]]:
    """(topic, record, value): collateral and a perpetual position for each account, at ``T0``."""
    out = []
    for i in range(accounts):
        account = f"acct-{i}"
        out.append(("backstop.collateral", "CollateralUpdate", {
            "account": account, "asset": "USDC", "amount": 100_000.0, "change": 100_000.0, "reason": "deposit",
            "sequence": 1, "event_time_ms": T0}))
        out.append(("backstop.positions", "PositionUpdate", {
            "account": account, "instrument": "BTC-PERPETUAL", "quantity": 1.0 + i % 5, "average_price": 60_000.0,
            "sequence": 1, "event_time_ms": T0}))
    return out


def index_value(t: int, price: float, underlying: str) -> dict:
    return {"underlying": underlying, "index_name": underlying.lower(), "price": price, "event_time_ms": t}


def _ticks(name: str, fields: list[tuple[str, str]]) -> dict:
    return {"type": "array", "items": {"type": "record", "name": name,
                                       "fields": [{"name": n, "type": t} for n, t in fields]}}


# The baseline's stored form: per underlying, the hour's ticks and the five minutes' ticks.
KEPT_SCHEMA = fastavro.parse_schema({"type": "array", "items": {"type": "record", "name": "KeptUnderlying", "fields": [
    {"name": "underlying", "type": "string"},
    {"name": "hour", "type": _ticks("HourTick", [("event_time_ms", "long"), ("value", "double"), ("ref", "string")])},
    {"name": "five_minutes", "type": _ticks("HistoryTick", [("time_ms", "long"), ("price", "double"),
                                                            ("squared", "double")])}]}})


def kept_encoded(kept: dict[str, list[list]], history: dict[str, list[list]]) -> int:
    """Bytes of the ticks kept one by one, encoded as a checkpoint is (Avro, then zlib level 1)."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, KEPT_SCHEMA, [
        {"underlying": u,
         "hour": [{"event_time_ms": t, "value": v, "ref": r} for t, v, r in zip(*kept[u])],
         "five_minutes": [{"time_ms": t, "price": p, "squared": s} for t, p, s in zip(*history[u])]}
        for u in UNDERLYINGS])
    return len(zlib.compress(body.getvalue(), 1))


def checkpoints_encoded(lane: Lane) -> int:
    """Bytes of the checkpoints a worker writes for ``lane``, parked: one per partition it holds."""
    return sum(len(encode_checkpoint(checkpoint)) for checkpoint in lane.checkpoints())


def timed(write: Callable[[], int]) -> tuple[int, float]:
    """Bytes ``write`` says it wrote and the best of three times to write them, in ms."""
    best, size = math.inf, 0
    for _ in range(3):
        started = time.perf_counter()
        size = write()
        best = min(best, time.perf_counter() - started)
    return size, best * 1e3


def park_at_next_boundary(lane: Lane) -> None:
    """Cut ``lane`` at the first tick boundary after what it applied and park it there; the
    records pushed must reach past that boundary."""
    lane.cut_at(lane.next_boundary())
    lane.release()
    if lane.park() is None:
        raise RuntimeError(f"the lane did not park at {lane.cut}: no record pushed reaches it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 minutes at 100 ticks/s")
    parser.add_argument("--minutes", type=int, default=65, help="minutes of ticks (past the detectors' hour)")
    parser.add_argument("--rate", type=int, default=300, help="index ticks per second, over all underlyings")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "snapshot.json")
    args = parser.parse_args()
    minutes, rate = (2, 100) if args.quick else (args.minutes, args.rate)

    lane = Lane.fresh(SigningKey("bench", b"bench-signing-key-000"), EngineParams(), 1, [0])
    offsets: dict[str, int] = {}

    def push(topic: str, record: str, value: dict) -> None:
        name = f"{topic}/0"
        offset = offsets[name] = offsets.get(name, -1) + 1
        lane.push(Message(name, offset, f"{topic}:0:{offset}", record, value))

    for topic, record, value in book_events(ACCOUNTS):
        push(topic, record, value)
    for name in lane.inputs():
        lane.idle(name)  # the index input wakes with its first tick
    kept: dict[str, list[list]] = {u: [[], [], []] for u in UNDERLYINGS}  # the hour, tick by tick
    history: dict[str, list[list]] = {u: [[], [], []] for u in UNDERLYINGS}  # the five minutes
    rows, tick, ticks = [], 0, minutes * 60 * rate
    started = time.perf_counter()
    for second in range(1, minutes * 60 + 1):
        for _ in range(rate):
            t, underlying = T0 + 1_000 + tick * 1_000 // rate, UNDERLYINGS[tick % len(UNDERLYINGS)]
            price = 100.0 * (1 - 0.5 * tick / ticks)  # half its value over the run
            push(INDEX, "IndexPrice", index_value(t, price, underlying))
            for column, item in zip(kept[underlying], (t, price, f"{INDEX}:0:{tick}")):
                column.append(item)
            prices = history[underlying][1]
            squared = math.log(price / prices[-1]) ** 2 if prices else 0.0
            for column, item in zip(history[underlying], (t, price, squared)):
                column.append(item)
            tick += 1
        minute, into = divmod(second, 60)
        if not into and (minute == 1 or minute % 5 == 0 or minute == minutes):
            park_at_next_boundary(lane)
            now = T0 + 1_000 + tick * 1_000 // rate
            for lists, span in ((kept, HOUR_MS), (history, REALISED_WINDOW_MS)):
                for columns in lists.values():
                    cut = bisect.bisect_left(columns[0], now - span)
                    for column in columns:
                        del column[:cut]
            size, ms = timed(lambda: checkpoints_encoded(lane))
            kept_size, kept_ms = timed(lambda: kept_encoded(kept, history))
            rows.append({"minute": minute, "checkpoint_bytes": size, "checkpoint_ms": round(ms, 2),
                         "kept_bytes": kept_size, "kept_ms": round(kept_ms, 2)})
            print(f"minute {minute:3d}: checkpoint {size / 1e3:8.1f} kB in {ms:6.1f} ms; ticks kept one by one "
                  f"{kept_size / 1e3:9.1f} kB in {kept_ms:7.1f} ms   ({time.perf_counter() - started:.0f} s)",
                  flush=True)
            lane.resume()
        lane.release()
    result = {"underlyings": len(UNDERLYINGS), "accounts": ACCOUNTS, "rate_per_s": rate, "minutes": minutes,
              "checkpoint_format": FORMAT, "checkpoint_max_bytes": CHECKPOINT_MAX_BYTES, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
