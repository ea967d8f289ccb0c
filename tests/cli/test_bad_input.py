"""Bad input on every command: exit 2, one line on stderr naming the culprit, no traceback, and
nothing created (no file, no folder, no store).

Each case runs ``pipelines.cli.main`` in a fresh working directory (with no ``BACKSTOP_``
settings in the environment) and compares the directory tree before and after; a few run the
installed ``backstop`` console script too. Inputs are written by ``setup`` functions: the file
names in the argument lists are relative to the working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BACKSTOP = Path(sys.executable).parent / "backstop"
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1


def _json(name: str, data: object) -> Callable[[Path], None]:
    return lambda cwd: (cwd / name).write_text(json.dumps(data))


def _example(name: str, change: Callable[[dict], None], encoding: str = "utf-8") -> Callable[[Path], None]:
    """An example file, changed, written as ``name`` in the working directory."""
    def setup(cwd: Path) -> None:
        data = json.loads((EXAMPLES / name).read_text())
        change(data)
        (cwd / name).write_text(json.dumps(data), encoding=encoding)
    return setup


def _recording(cwd: Path) -> None:
    main(["scenarios", "record", "aug-2024", "--out", str(cwd / "rec.avro")])


def _truncated_recording(cwd: Path) -> None:
    _recording(cwd)
    data = (cwd / "rec.avro").read_bytes()
    (cwd / "rec.avro").unlink()
    (cwd / "cut.avro").write_bytes(data[: len(data) * 2 // 3])


def _set(path: str, value: object) -> Callable[[dict], None]:
    """Set a dotted path (list indexes as numbers) in a JSON document."""
    *parents, last = path.split(".")

    def change(data: dict) -> None:
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return change


MARGIN = ["margin", "--portfolio", "portfolio.json", "--market", "market.json"]
EXAMPLE_MARGIN = ["margin", "--portfolio", str(EXAMPLES / "portfolio.json"), "--market", str(EXAMPLES / "market.json")]


def _margin_files(portfolio: Callable[[dict], None] = lambda d: None, market: Callable[[dict], None] = lambda d: None,
                  encoding: str = "utf-8") -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        _example("portfolio.json", portfolio, encoding)(cwd)
        _example("market.json", market)(cwd)
    return setup


def _nothing(cwd: Path) -> None:
    pass


# (id, argv, setup, a fragment the one line must hold)
CASES: list[tuple[str, list[str], Callable[[Path], None], str]] = [
    # flag values
    ("demo-negative-seed", ["demo", "--seed", "-1"], _nothing, "--seed"),
    ("backtest-seed-text", ["backtest", "--seed", "seven"], _nothing, "--seed"),
    ("backtest-trigger-nan", ["backtest", "--trigger", "nan"], _nothing, "--trigger"),
    ("backtest-trigger-negative", ["backtest", "--trigger", "-5"], _nothing, "--trigger"),
    ("backtest-trigger-zero", ["backtest", "--trigger", "0"], _nothing, "--trigger"),
    ("backtest-sweep-zero-negative", ["backtest", "--sweep", "0,-1"], _nothing, "--sweep"),
    ("backtest-sweep-empty", ["backtest", "--sweep", ","], _nothing, "--sweep"),
    ("backtest-plot-without-sweep", ["backtest", "--plot", "x.png"], _nothing, "--sweep"),
    ("backtest-jobs-zero", ["backtest", "--jobs", "0"], _nothing, "--jobs"),
    ("margin-liquidate-to-nan", EXAMPLE_MARGIN + ["--liquidate-to", "nan"], _nothing, "--liquidate-to"),
    ("margin-realised-vol-percent", EXAMPLE_MARGIN + ["--adaptive", "--realised-vol", "BTC=90"], _nothing,
     "vols are fractions"),
    ("replay-speed-zero", ["replay", "rec.avro", "--in-process", "--speed", "0"], _nothing, "--speed"),
    ("record-idle-negative", ["record", "--out", "x.avro", "--idle", "-1"], _nothing, "--idle"),
    ("executor-batch-size-zero", ["executor", "--venue-config", "v.json", "--batch-size", "0"], _nothing,
     "--batch-size"),
    ("worker-checkpoint-ms-zero", ["worker", "--checkpoint-ms", "0"], _nothing, "--checkpoint-ms"),
    ("worker-idle-negative", ["worker", "--idle-ms", "-3"], _nothing, "--idle-ms"),
    ("worker-event-age-nan", ["worker", "--max-event-age-s", "nan"], _nothing, "--max-event-age-s"),
    ("audit-sink-batch-rows-zero", ["audit-sink", "--store", "s", "--batch-rows", "0"], _nothing, "--batch-rows"),
    ("migrate-negative-ttl", ["audit", "migrate", "--store", "s", "--inputs-ttl-days", "-5"], _nothing,
     "--inputs-ttl-days"),
    ("unknown-command", ["nonsense"], _nothing, "nonsense"),
    ("missing-required-flag", ["margin"], _nothing, "--portfolio"),
    # input files
    ("margin-utf16", MARGIN, _margin_files(encoding="utf-16"), "UTF-8"),
    ("margin-qty-1e300", MARGIN, _margin_files(_set("positions.2.qty", 1e300)), "positions[2].qty"),
    ("margin-qty-huge-integer", MARGIN, _margin_files(_set("positions.2.qty", 10**400)), "positions[2].qty"),
    ("margin-price-beyond-bound", MARGIN, _margin_files(market=_set("underlyings.BTC.index", 1e13)),
     "underlyings.BTC.index"),
    ("margin-vol-as-percent", MARGIN, _margin_files(market=_set("underlyings.BTC.vol", 55)), "0.55 for 55 %"),
    ("margin-iv-as-percent", MARGIN, _margin_files(market=_set("instruments.BTC-27DEC26-60000-C.iv", 60)),
     "instruments.BTC-27DEC26-60000-C.iv"),
    ("margin-unknown-portfolio-key", MARGIN, _margin_files(_set("colateral", 1)), "colateral"),
    ("margin-unknown-position-key", MARGIN, _margin_files(_set("positions.0.avg_prce", 1)), "positions[0].avg_prce"),
    ("margin-unknown-market-key", MARGIN, _margin_files(market=_set("underlyings.BTC.volatility", 0.5)),
     "underlyings.BTC.volatility"),
    ("margin-missing-file", MARGIN, _nothing, "--market"),
    ("venue-config-unknown-key", ["executor", "--venue-config", "v.json"], _json("v.json", {"books": {}, "fund": 1}),
     "fund"),
    ("venue-config-unknown-lp-key", ["executor", "--venue-config", "v.json"],
     _json("v.json", {"books": {}, "lps": [{"lp_id": "a", "capacity_usd": 1, "per_minute_usd": 1, "discount": 0,
                                            "instrumnets": []}]}), "lps[0].instrumnets"),
    ("venue-config-missing-key", ["executor", "--venue-config", "v.json"], _json("v.json", {}), "books"),
    ("replay-missing-file", ["replay", "missing.avro", "--in-process"], _nothing, "missing.avro"),
    ("replay-json-file", ["replay", str(EXAMPLES / "market.json"), "--in-process"], _nothing, "not an Avro"),
    ("replay-empty-file", ["replay", "empty.avro", "--in-process"], lambda cwd: (cwd / "empty.avro").touch(),
     "not an Avro"),
    ("replay-truncated-file", ["replay", "cut.avro", "--in-process"], _truncated_recording, "cut short"),
    ("replay-kafka-json-flag", ["replay", "rec.avro", "--kafka", "--json"], _recording, "--json"),
    ("replay-in-process-speed", ["replay", "rec.avro", "--in-process", "--speed", "2"], _recording, "--speed"),
    ("replay-kafka-venue", ["replay", "rec.avro", "--kafka", "--venue"], _recording, "--venue"),
    ("bad-config-file", ["--config", "missing.toml", "audit", "query", "SELECT 1", "--store", "s"], _nothing,
     "missing.toml"),
    # an unreachable broker: one line within seconds
    ("replay-kafka-unreachable", ["replay", "rec.avro", "--kafka", "--bootstrap", UNREACHABLE], _recording,
     UNREACHABLE),
    ("record-kafka-unreachable", ["record", "--out", "x.avro", "--bootstrap", UNREACHABLE], _nothing, UNREACHABLE),
    # side effects: read-only commands on a missing store, outputs in missing folders
    ("query-missing-store", ["audit", "query", "SELECT 1", "--store", "no-store"], _nothing, "no-store"),
    ("timeline-missing-store", ["incident", "timeline", "--account", "a", "--store", "no-store"], _nothing,
     "no-store"),
    ("timeline-default-store-missing", ["incident", "timeline", "--account", "a"], _nothing, "audit-store"),
    ("summary-missing-store", ["incident", "summary", "--from", "2026-01-01", "--to", "2026-01-02", "--store",
                               "no-store"], _nothing, "no-store"),
    ("plot-missing-store", ["incident", "plot", "--account", "a", "--out", "x.png", "--store", "no-store"], _nothing,
     "no-store"),
    ("plot-out-in-missing-folder", ["incident", "plot", "--account", "a", "--out", "no/dir/x.png", "--store", "s"],
     _nothing, "no/dir"),
    ("record-missing-store", ["record", "--out", "x.avro", "--store", "no-store"], _nothing, "no-store"),
    ("demo-store-is-a-file", ["demo", "--store", "a-file"], lambda cwd: (cwd / "a-file").touch(), "a-file"),
    ("migrate-store-is-a-file", ["audit", "migrate", "--store", "a-file"], lambda cwd: (cwd / "a-file").touch(),
     "a-file"),
    ("record-out-in-missing-folder", ["record", "--out", "no/x.avro", "--store", "no-store"], _nothing, "no"),
    ("scenario-out-in-missing-folder", ["scenarios", "record", "aug-2024", "--out", "no/x.avro"], _nothing, "no"),
    ("sweep-plot-in-missing-folder", ["backtest", "--sweep", "1.0", "--plot", "no/x.png"], _nothing, "no"),
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, and no settings from the environment."""
    for name in list(os.environ):
        if name.startswith("BACKSTOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refuses a flag through exit(2)
        return int(exc.code or 0)


@pytest.mark.parametrize("argv, setup, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(argv: list[str], setup: Callable[[Path], None],
                                                          fragment: str, cwd: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    setup(cwd)
    before = _tree(cwd)
    capsys.readouterr()
    code = _run(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    assert fragment in lines[0]
    assert out == ""
    assert _tree(cwd) == before


@pytest.mark.parametrize("argv, setup", [
    (["demo", "--seed", "-1"], _nothing),
    (MARGIN, _margin_files(encoding="utf-16")),
    (["replay", "missing.avro", "--in-process"], _nothing),
    (["incident", "timeline", "--account", "a", "--store", "no-store"], _nothing),
], ids=["argument", "input-file", "replay-file", "missing-store"])
def test_the_console_script_prints_one_line(argv: list[str], setup: Callable[[Path], None], cwd: Path) -> None:
    setup(cwd)
    before = _tree(cwd)
    done = subprocess.run([str(BACKSTOP), *argv], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert _tree(cwd) == before
