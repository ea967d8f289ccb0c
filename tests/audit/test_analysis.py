"""Rows -> timeline, summary, query, plot on both backends; a redelivered batch adds no rows."""

from __future__ import annotations

import json

import pytest

from pipelines.audit import summary, timeline
from pipelines.cli import main
from tests.audit.stores import load_incident, store_cli_args
from tests.kit.incident import ACCOUNT, EXPECTED, T0, incident
from tests.kit.records import sample


def test_redelivered_batch_adds_no_rows(migrated) -> None:
    load_incident(migrated, repeat=3)
    for table, count in EXPECTED.items():
        assert migrated.count(table) == count, table
    story = timeline.timeline(migrated, ACCOUNT)
    assert len({(e.kind, e.coordinates) for e in story}) == len(story)


def test_timeline_tells_the_story_in_order(migrated) -> None:
    load_incident(migrated, repeat=2)
    story = timeline.timeline(migrated, ACCOUNT)
    kinds = [(e.kind, e.what) for e in story]
    assert [e.time_ms for e in story] == sorted(e.time_ms for e in story)
    assert ("input", "PositionUpdate") == kinds[0] and ("input", "CollateralUpdate") == kinds[1]
    assert [e.id for e in story if e.kind == "breach"] == ["b-1", "b-2"]
    assert [e.id for e in story if e.kind == "action"] == ["a-1", "a-2", "a-3"]
    assert [e.id for e in story if e.kind == "execution"] == ["a-1:1", "a-1:2", "a-2:1", "a-3:1", "a-3:ins"]
    assert next(e for e in story if e.id == "a-1").causes == ["b-1", "b-2"]
    assert next(e for e in story if e.id == "a-1:2").causes == ["a-1"]
    assert next(e for e in story if e.id == "b-1").causes == ["backstop.market.index/0@2"]
    margins = [e.margin_ratio for e in story if e.kind == "breach"]
    assert margins == [1.05, 0.92]
    fill = next(e for e in story if e.id == "a-1:1")
    assert fill.price == 0.042 and fill.fields["fee"] == 0.0002 and fill.fields["slippage_bps"] == 20.0
    # market inputs of what the account trades (BTC), not ETH, not another account
    index = [e for e in story if e.what == "IndexPrice"]
    assert [e.price for e in index] == [61_000.0, 60_000.0, 58_500.0, 57_000.0]
    assert all(e.account in ("", ACCOUNT) for e in story)
    # a window
    window = timeline.timeline(migrated, ACCOUNT, T0 + 20_000, T0 + 20_500)
    assert {e.id for e in window if e.kind != "input"} == {"b-2", "a-1", "a-1:1", "a-1:2"}


def venue_states() -> list[tuple[str, str, dict]]:
    """The circuit of BTC (the incident account's underlying) halting, reduce-only, resuming, each
    accepted by the venue; and an ETH halt, which is not the account's."""
    out = []
    for action_id, kind, underlying, state, t in (
            ("h-1", "halt", "BTC", "halted", T0 + 15_000),
            ("r-1", "market_reduce_only", "BTC", "reducing", T0 + 25_000),
            ("u-1", "resume", "BTC", "active", T0 + 36_000), ("h-eth", "halt", "ETH", "halted", T0 + 15_000)):
        out.append(("backstop.actions", "Action", sample(
            "Action", action_id=action_id, action_type=kind, account=underlying, instrument=None, side=None,
            quantity=0.0, limit_price=None, breach_ids=[f"move-{underlying}"], event_time_ms=t,
            params={"underlying": underlying, "level": "1", "state": state})))
        out.append(("backstop.executions", "ExecutionReport", sample(
            "ExecutionReport", execution_id=f"{action_id}/0", action_id=action_id, account=underlying,
            status="accepted", venue="simulated", instrument=None, side=None, filled_quantity=0.0, avg_price=None,
            fee=0.0, slippage_bps=None, counterparty="", event_time_ms=t + 40)))
    return out


def test_timeline_shows_the_venue_states_of_the_accounts_underlyings(migrated) -> None:
    load_incident(migrated, records=incident() + venue_states())
    story = timeline.timeline(migrated, ACCOUNT, include_market=False)
    states = [(e.what, e.instrument, e.fields["venue_state"]) for e in story if "venue_state" in e.fields]
    assert states == [("halt", "BTC", "halted"), ("market_reduce_only", "BTC", "reducing"), ("resume", "BTC", "active")]
    reports = [(e.what, e.instrument, e.causes) for e in story if e.kind == "execution" and e.account == ""]
    assert reports == [("accepted", "BTC", ["h-1"]), ("accepted", "BTC", ["r-1"]), ("accepted", "BTC", ["u-1"])]
    shown = timeline.rows(timeline.condense(story))
    assert [row[6] for row in shown if row[2] == "market_reduce_only"] == ["venue state BTC: reducing (level 1)"]
    # in time order among the account's own entries: the halt between its first and second breach
    order = [e.id for e in story if e.kind in ("breach", "action")]
    assert order.index("b-1") < order.index("h-1") < order.index("b-2") < order.index("r-1") < order.index("u-1")


def delistings() -> list[tuple[str, str, dict]]:
    """A mark-manipulation breach and its delisting for the incident account's option, and for two
    instruments it does not hold (BTC's perpetual, ETH's)."""
    out = []
    for n, instrument in enumerate(("BTC-27DEC26-60000-C", "BTC-PERPETUAL", "ETH-PERPETUAL")):
        underlying, t = instrument.split("-")[0], T0 + 12_000 + n
        out.append(("backstop.breaches", "Breach", sample(
            "Breach", breach_id=f"mm-{n}", kind="mark_manipulation", account=underlying, underlying=underlying,
            instrument=instrument, observed=0.4, threshold=0.3, severity="warning", event_time_ms=t, details={})))
        out.append(("backstop.actions", "Action", sample(
            "Action", action_id=f"d-{n}", action_type="delist_settle", account=underlying, instrument=instrument,
            side=None, quantity=0.0, limit_price=None, breach_ids=[f"mm-{n}"], event_time_ms=t,
            params={"instrument": instrument, "settle_price": "0.05", "reason": "thin_book_pump"})))
    return out


def test_timeline_shows_the_delisting_of_an_instrument_the_account_holds(migrated) -> None:
    load_incident(migrated, records=incident() + delistings())
    story = timeline.timeline(migrated, ACCOUNT, include_market=False)
    shown = [(e.kind, e.what, e.instrument, e.causes) for e in story if e.id in ("mm-0", "mm-1", "mm-2", "d-0",
                                                                                "d-1", "d-2")]
    assert shown == [("breach", "mark_manipulation", "BTC-27DEC26-60000-C", ["backstop.positions/3@1234",
                                                                               "ix-9"]),
                     ("action", "delist_settle", "BTC-27DEC26-60000-C", ["mm-0"])]
    delisting = next(e for e in story if e.id == "d-0")
    assert "settle_price=0.05" in delisting.detail


def test_summary(migrated) -> None:
    load_incident(migrated, repeat=2)
    result = summary.summary(migrated, T0 - 3_600_000, T0 + 3_600_000)
    assert {(r["kind"], r["severity"]): (r["fired"], r["cleared"]) for r in result["breaches"]} == {
        ("margin_shortfall", "warning"): (1, 0), ("margin_shortfall", "critical"): (1, 0)}
    assert {r["action_type"]: r["count"] for r in result["actions"]} == {
        "partial_liquidation": 1, "transfer_to_lp": 1, "auto_deleverage": 1}
    lat = result["latency_ms"]
    # a-1: earliest breach b-1 at +10001, action at +20050, first fill +20250
    assert lat["trigger_to_action"]["count"] == 3
    assert lat["trigger_to_fill"]["max"] == (T0 + 32_020) - (T0 + 20_001)
    assert lat["action_to_fill"]["p50"] == 200 or lat["action_to_fill"]["count"] == 3
    loss = {r["currency"]: r for r in result["losses"]}["BTC"]
    assert loss["fees"] == pytest.approx(0.0003)
    assert loss["slippage_cost"] == pytest.approx(6 * 0.042 * 20 / 1e4 + 4 * 0.043 * 30 / 1e4)
    liquidity = {r["venue"]: r for r in result["liquidity"]}
    assert liquidity["lp"]["events"] == 1 and liquidity["lp"]["counterparties"] == 1
    assert liquidity["insurance_fund"]["total_quantity"] == 1.0
    assert liquidity["adl"]["events"] == 1 and result["adl_actions"]["count"] == 1
    assert sum(r["count"] for r in result["dead_letters"]) == 1
    empty = summary.summary(migrated, T0 - 10, T0 - 5)
    assert empty["breaches"] == [] and empty["latency_ms"]["trigger_to_fill"]["count"] == 0


def test_commands_text_and_json(migrated, capsys, tmp_path) -> None:
    load_incident(migrated)
    where = store_cli_args(migrated)
    assert main(["incident", "timeline", "--account", ACCOUNT, *where]) == 0
    text = capsys.readouterr().out
    assert "partial_liquidation" in text and "a-1:2" in text and "margin" in text.splitlines()[0]
    assert main(["incident", "timeline", "--account", ACCOUNT, "--json", "--from", "2027-01-01T00:00:20Z",
                 "--to", str(T0 + 21_000), *where]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in doc["entries"] if e["kind"] == "action"] == ["a-1"]

    assert main(["incident", "summary", "--from", "2027-01-01", "--to", "2027-01-02", *where]) == 0
    text = capsys.readouterr().out
    assert "latency (ms)" in text and "trigger_to_fill" in text and "insurance_fund" in text
    assert main(["incident", "summary", "--from", "2027-01-01", "--to", "2027-01-02", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out)["adl_actions"]["count"] == 1

    assert main(["audit", "query", "SELECT action_id, action_type FROM actions FINAL WHERE account = %(a)s "
                 "ORDER BY event_time_ms", "--param", "a=acct-1", "--json", *where]) == 0
    assert [r[0] for r in json.loads(capsys.readouterr().out)["rows"]] == ["a-1", "a-2", "a-3"]
    assert main(["audit", "query", "SELECT count() AS n FROM breaches FINAL", *where]) == 0
    assert "(1 row)" in capsys.readouterr().out
    assert main(["audit", "query", "DROP TABLE breaches", *where]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["audit", "query", "SELECT * FROM no_such_table", *where]) == 2
    assert migrated.count("breaches") == 2

    png, page = tmp_path / "acct.png", tmp_path / "acct.html"
    assert main(["incident", "plot", "--account", ACCOUNT, "--out", str(png), "--html", str(page), *where]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "data:image/png;base64," in page.read_text() and "a-1:2" in page.read_text()
    assert main(["incident", "plot", "--account", "nobody", "--out", str(png), *where]) == 2


def test_commands_before_migrate_say_so(store, capsys) -> None:
    if store.kind == "server":
        store.client.execute(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()
    assert main(["incident", "timeline", "--account", "x", *store_cli_args(store)]) == 2
    assert "audit migrate" in capsys.readouterr().err
    if store.kind == "server":
        store.create_database()
