"""The short timeline view: market ticks summarised per series, every other entry kept; --all-ticks lists all."""

from __future__ import annotations

from pipelines.audit.timeline import Entry, condense, is_market_tick
from pipelines.cli import main
from tests.audit.stores import load_incident, store_cli_args
from tests.kit.incident import ACCOUNT


def tick(t: int, what: str, subject: str, price: float | None = None, iv: float | None = None) -> Entry:
    return Entry(t, "input", what, "", subject, price=price, coordinates=f"m/0@{t}",
                 fields={} if iv is None else {"iv": iv})


def index_ticks(text: str) -> int:
    """Rows of the text table that are one BTC IndexPrice tick (not the series summary, ``IndexPrice x4``)."""
    return sum(1 for line in text.splitlines() if line.split()[2:4] == ["IndexPrice", "BTC"])


def test_condense_keeps_account_entries_and_summarises_each_series() -> None:
    prices = ((10, 60_000.0), (20, 41_000.0), (30, 45_000.0), (40, 44_000.0))
    index = [tick(t, "IndexPrice", "BTC", p) for t, p in prices]
    marks = [tick(t, "MarkPrice", "BTC-PERPETUAL", p) for t, p in ((11, 60_010.0), (31, 44_990.0))]
    vols = [tick(t, "VolatilityUpdate", "BTC", iv=v) for t, v in ((12, 0.6), (32, 1.4))]
    own = [Entry(15, "breach", "margin_shortfall", "acct", margin_ratio=1.1, id="b"),
           Entry(16, "action", "partial_liquidation", "acct", "BTC-PERPETUAL", id="a", causes=["b"]),
           Entry(25, "execution", "filled", "acct", "BTC-PERPETUAL", price=41_500.0, id="e", causes=["a"])]
    entries = sorted(index + marks + vols + own, key=lambda e: e.time_ms)

    short = condense(entries)

    assert [e for e in short if not is_market_tick(e) and e.kind != "input"] == own
    summaries = {e.what: e for e in short if e.kind == "input"}
    assert set(summaries) == {"IndexPrice x4", "MarkPrice x2", "VolatilityUpdate x2"}
    btc = summaries["IndexPrice x4"]
    assert btc.time_ms == 10 and btc.instrument == "BTC"
    assert "first 60000" in btc.detail and "low 41000 at" in btc.detail and "last 44000" in btc.detail
    vol = summaries["VolatilityUpdate x2"].detail
    assert "low 0.6" in vol and "high 1.4" in vol
    assert [e.time_ms for e in short] == sorted(e.time_ms for e in short)


def test_condense_without_market_ticks_changes_nothing() -> None:
    own = [Entry(1, "input", "PositionUpdate", "acct", "BTC-PERPETUAL"), Entry(2, "breach", "margin_shortfall", "acct")]
    assert condense(own) == own


def test_timeline_text_is_short_by_default_and_complete_with_all_ticks(migrated, capsys) -> None:
    load_incident(migrated)
    where = store_cli_args(migrated)
    assert main(["incident", "timeline", "--account", ACCOUNT, *where]) == 0
    short = capsys.readouterr().out
    assert main(["incident", "timeline", "--account", ACCOUNT, "--all-ticks", *where]) == 0
    full = capsys.readouterr().out
    assert "IndexPrice x4" in short and "--all-ticks" in short
    assert index_ticks(short) == 0 and index_ticks(full) == 4
    assert len(short.splitlines()) < len(full.splitlines())
    for line in full.splitlines():
        if " action " in line or " breach " in line or " execution " in line:
            assert line in short
