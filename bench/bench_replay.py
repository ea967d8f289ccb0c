"""In-process replay throughput: a scenario recording (real codec) through the in-process cluster.

Reports four figures, one core: decoding the file (codec), sequencing alone (Sequencer), and the
whole replay (``replay_dicts``) on one shard and on twelve (``run_shards``: every market event
through twelve engines, as a cluster of twelve partitions does it). Decoding and
sequencing are the baselines: the floor of any replay of the same file.

    .venv/bin/python bench/bench_replay.py [--scenario NAME] [--out F]

Writes bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipelines.detect.sequencer import Sequencer
from pipelines.engine.engine import Engine
from pipelines.policy.signing import SigningKey
from pipelines.replay.inprocess import load, replay_dicts
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="may-2021", choices=library.names())
    parser.add_argument("--quick", action="store_true", help="accepted for bench/run.py; the replay is short anyway")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "replay.json"))
    args = parser.parse_args()
    g = generate(library.get(args.scenario))
    path = Path(tempfile.mkdtemp()) / "rec.avro"
    n = write_recording(g, path)
    t = time.perf_counter()
    rows = list(load(path))
    decode = n / (time.perf_counter() - t)
    t = time.perf_counter()
    seq = Sequencer(0)
    for topic, part, _off, record, value in rows:
        seq.push(f"{topic}/{part}", value["event_time_ms"], (record, value))
    for name in {f"{r[0]}/{r[1]}" for r in rows}:
        seq.close(name)
    ordered = seq.pop_ready()
    sequence = n / (time.perf_counter() - t)
    t = time.perf_counter()
    engine = Engine(SigningKey("b", b"bench-signing-key-000"))
    for i, (record, value) in enumerate(ordered):
        engine.on_event(record, value, str(i))
    single = n / (time.perf_counter() - t)
    clusters = {}
    for partitions in (1, 12):  # one shard holding every account, and twelve
        t = time.perf_counter()
        replay_dicts(rows, partitions=partitions)
        clusters[partitions] = n / (time.perf_counter() - t)
    out = {"scenario": args.scenario, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "events": n,
           "decode_events_per_s": round(decode),
           "sequencer_events_per_s": round(sequence), "engine_single_events_per_s": round(single),
           "run_shards_1_partition_events_per_s": round(clusters[1]),
           "run_shards_12_partitions_events_per_s": round(clusters[12])}
    print(json.dumps(out, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
