#!/usr/bin/env python3
"""Encode+decode throughput: official ``avro`` vs ``fastavro`` vs Backstop's framed ``Codec``.

    .venv/bin/python bench/bench_codec.py [--quick]

Realistic records (a position update, an option mark, a breach with triggers and details, an
order-book snapshot with 10 levels a side). Each implementation encodes N records to bytes and
decodes them back; the figure is records per second for the round trip (encode + decode), best
of ``--repeat`` runs. Writes bench/results/codec.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from functools import partial
from pathlib import Path

import avro
import avro.io
import fastavro
from fastavro import schemaless_reader, schemaless_writer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.events.codec import Codec  # noqa: E402
from pipelines.events.registry import EmbeddedRegistry  # noqa: E402
from pipelines.events.schemas import default_schemas  # noqa: E402

NOW = 1_798_761_600_000


def records(n: int) -> dict[str, list[dict]]:
    opt = "BTC-27DEC26-60000-C"
    return {
        "PositionUpdate": [{"account": f"acct-{i % 5000}", "instrument": opt, "quantity": -25.0 + i % 50,
                            "average_price": 0.05 + i * 1e-6, "sequence": i, "event_time_ms": NOW + i}
                           for i in range(n)],
        "MarkPrice": [{"instrument": opt, "underlying": "BTC", "mark_price": 0.0523 + i * 1e-7, "index_price": 61234.5,
                       "underlying_price": 61300.0, "mark_iv": 0.55, "best_bid": 0.052, "best_ask": 0.0525,
                       "open_interest": 1250.0, "event_time_ms": NOW + i} for i in range(n)],
        "Breach": [{"breach_id": f"b-{i:08x}", "kind": "margin_shortfall", "account": f"acct-{i % 5000}",
                    "underlying": "BTC", "instrument": None, "observed": 1.12, "threshold": 1.0, "severity": "critical",
                    "window_start_ms": NOW + i - 60_000, "window_end_ms": NOW + i,
                    "triggers": [{"topic": "backstop.positions", "partition": 3, "offset": i, "event_id": None},
                                 {"topic": "backstop.market.index", "partition": 0, "offset": i, "event_id": None}],
                    "details": {"maintenance_margin": "2.1", "equity": "1.9"}, "event_time_ms": NOW + i}
                   for i in range(n)],
        "OrderBookDepth": [{"instrument": "BTC-PERPETUAL",
                            "bids": [{"price": 61200.0 - k * 5, "quantity": 10.0 + k} for k in range(10)],
                            "asks": [{"price": 61210.0 + k * 5, "quantity": 8.0 + k} for k in range(10)],
                            "bands": [{"band_bps": b, "bid_quantity": 100.0 * b, "ask_quantity": 90.0 * b}
                                      for b in (10, 50, 100)],
                            "sequence": i, "event_time_ms": NOW + i} for i in range(n)],
    }


def bench_avro(schema, data):
    writer, reader = avro.io.DatumWriter(schema), avro.io.DatumReader(schema)
    out = []
    for d in data:
        buf = io.BytesIO()
        writer.write(d, avro.io.BinaryEncoder(buf))
        out.append(buf.getvalue())
    return [reader.read(avro.io.BinaryDecoder(io.BytesIO(b))) for b in out]


def bench_fastavro(parsed, data):
    out = []
    for d in data:
        buf = io.BytesIO()
        schemaless_writer(buf, parsed, d)
        out.append(buf.getvalue())
    return [schemaless_reader(io.BytesIO(b), parsed, None) for b in out]


def bench_codec(codec, record, data):
    return [codec.decode(b).value for b in codec.encode_many(record, data)]


def best_rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N (a few seconds)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "codec.json"))
    args = parser.parse_args()
    n_fast = 5_000 if args.quick else 50_000
    n_avro = 1_000 if args.quick else 10_000
    schemas = default_schemas()
    codec = Codec(EmbeddedRegistry())
    results = {}
    for record, data in records(n_fast).items():
        schema = schemas[record]
        assert bench_fastavro(schema.parsed, data[:10]) == data[:10] == bench_avro(schema.avro, data[:10])
        assert bench_codec(codec, record, data[:10]) == data[:10]
        rates = {
            "avro": best_rate(partial(bench_avro, schema.avro, data[:n_avro]), n_avro, args.repeat),
            "fastavro": best_rate(partial(bench_fastavro, schema.parsed, data), n_fast, args.repeat),
            "codec": best_rate(partial(bench_codec, codec, record, data), n_fast, args.repeat),
        }
        rates = {k: round(v) for k, v in rates.items()}
        results[record] = {"records_per_s": rates, "fastavro_over_avro": round(rates["fastavro"] / rates["avro"], 1),
                           "codec_over_avro": round(rates["codec"] / rates["avro"], 1),
                           "bytes": len(codec.encode(record, data[0]))}
        result = results[record]
        print(f"{record:16} avro {rates['avro']:>9,}/s  fastavro {rates['fastavro']:>9,}/s  "
              f"codec {rates['codec']:>9,}/s  fastavro/avro {result['fastavro_over_avro']:>5}x  "
              f"codec/avro {result['codec_over_avro']:>5}x  ({result['bytes']} B framed)")
    report = {
        "what": "encode+decode round trips per second, best of repeats",
        "quick": args.quick, "n_fastavro": n_fast, "n_avro": n_avro, "repeat": args.repeat,
        "python": platform.python_version(), "avro": avro.__version__, "fastavro": fastavro.__version__,
        "machine": platform.machine(), "results": results,
        "choice": "fastavro (through Codec) on the hot path; official avro for parsing and compatibility checks",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
