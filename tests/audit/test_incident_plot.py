"""The incident plot: one price panel per underlying and per instrument, margin ratio and action lanes."""

from __future__ import annotations

import pytest

from pipelines.audit import plot
from pipelines.audit.timeline import Entry
from pipelines.errors import UserError

OPTION, PERP = "BTC-27MAR20-65000-C", "BTC-PERPETUAL"


def incident() -> list[Entry]:
    """An option and a perpetual, the index falling, two breaches, actions and fills on both instruments."""
    entries = [Entry(0, "input", "PositionUpdate", "acct", OPTION, price=2_200.0),
               Entry(0, "input", "PositionUpdate", "acct", PERP, price=60_000.0)]
    for k in range(60):
        price = 60_000.0 - 300.0 * k
        entries.append(Entry(k * 1_000, "input", "IndexPrice", "", "BTC", price=price))
        entries.append(Entry(k * 1_000 + 1, "input", "MarkPrice", "", PERP, price=price + 5.0))
    entries += [
        Entry(20_000, "action", "margin_call", "acct", margin_ratio=0.85),
        Entry(30_000, "breach", "margin_shortfall", "acct", margin_ratio=1.02, fields={"threshold": 1.0}),
        Entry(30_000, "action", "partial_liquidation", "acct", OPTION, margin_ratio=1.02),
        Entry(30_100, "execution", "filled", "acct", OPTION, price=830.0, quantity=1.0, fields={"side": "buy"}),
        Entry(31_000, "action", "transfer_to_lp", "acct", PERP, margin_ratio=1.1),
        Entry(31_100, "execution", "filled", "acct", PERP, price=44_000.0, quantity=0.5, fields={"side": "sell"}),
    ]
    return sorted(entries, key=lambda e: e.time_ms)


def test_panels_follow_the_account_underlyings_and_instruments() -> None:
    entries = incident()
    assert plot.underlyings_of(entries) == ["BTC"]
    assert plot.instruments_of(entries) == [OPTION, PERP]


def test_plot_writes_a_png_and_html(tmp_path) -> None:
    png = plot.plot_png(incident(), "acct", tmp_path / "incident.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    page = plot.write_html(incident(), "acct", png, tmp_path / "incident.html").read_text()
    assert "data:image/png;base64," in page and "partial_liquidation" in page


def test_nothing_recorded_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="nothing recorded"):
        plot.plot_png([], "acct", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
