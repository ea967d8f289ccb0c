"""``backstop incident plot``: price, margin ratio, actions and fills over time for one account (PNG, HTML).

Panels, sharing the time axis (UTC): the index price of each underlying the account trades; one
panel per instrument with its mark (where the market publishes one), the position's entry prices
and the fills on that instrument (buy and sell markers), so an option's and a perpetual's prices
never share a scale; the margin ratio (maintenance / equity) over the whole incident, a line through
the engine's exposure snapshots (``exposures`` table: while the account is revalued, one at least
every 5 s and on every 0.02 move of the ratio), with the breaches and actions that carry a
ratio as points on it, the breach thresholds and the liquidation line at 1 (the line breaks where
equity is gone and the ratio infinite); and one lane per action type, so action labels never
overlap. The HTML page embeds the PNG and the timeline table.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import math
from pathlib import Path

from pipelines.audit.render import iso_ms
from pipelines.audit.store import Store
from pipelines.audit.timeline import Entry, time_filter
from pipelines.errors import UserError

PANEL_HEIGHT_IN = 1.9


def _dt(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Exposure:
    """One exposure snapshot of the account: its margin ratio (None when not finite) and ladder state."""

    time_ms: int
    margin_ratio: float | None
    state: str


def exposures(store: Store, account: str, start_ms: int | None = None, end_ms: int | None = None) -> list[Exposure]:
    """The account's exposure snapshots between ``start_ms`` and ``end_ms`` (inclusive), in event-time order;
    none from a store migrated before the ``exposures`` table existed."""
    if not store.has_table("exposures"):
        return []
    where, params = time_filter(start_ms, end_ms)
    rows = store.query(f"""
        SELECT event_time_ms, margin_ratio, state
        FROM {store.table('exposures')} FINAL
        WHERE account = %(account)s AND {where}
        ORDER BY event_time_ms""", {**params, "account": account}).rows
    return [Exposure(ms, ratio if ratio is not None and math.isfinite(ratio) else None, state)
            for ms, ratio, state in rows]


def underlyings_of(entries: list[Entry]) -> list[str]:
    """Underlyings with an index price in ``entries``, in first-seen order."""
    return list(dict.fromkeys(e.instrument for e in entries if e.kind == "input" and e.what == "IndexPrice"))


def instruments_of(entries: list[Entry]) -> list[str]:
    """Instruments the account held, was acted on or filled in, in first-seen order."""
    return list(dict.fromkeys(e.instrument for e in entries if e.instrument and e.account))


def plot_png(entries: list[Entry], account: str, path: Path, snapshots: list[Exposure] | None = None) -> Path:
    """Write the PNG of ``entries`` (a timeline) and the account's exposure ``snapshots``; returns ``path``."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("incident plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    if not entries:
        raise UserError(f"nothing recorded for account {account} in that time range")
    underlyings, instruments = underlyings_of(entries), instruments_of(entries)
    heights = [1.0] * (len(underlyings) + len(instruments)) + [1.0, 0.8]
    fig, axes = plt.subplots(len(heights), 1, sharex=True, height_ratios=heights,
                             figsize=(11, 1.0 + PANEL_HEIGHT_IN * sum(heights)), squeeze=False)
    axes = list(axes[:, 0])
    for ax, underlying in zip(axes, underlyings):
        _draw_index(ax, entries, underlying)
    for ax, name in zip(axes[len(underlyings):], instruments):
        _draw_instrument(ax, entries, name)
    _draw_margin(axes[-2], entries, snapshots or [])
    _draw_actions(axes[-1], entries)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=datetime.UTC))
    axes[-1].set_xlabel(f"event time (UTC) from {iso_ms(entries[0].time_ms)} to {iso_ms(entries[-1].time_ms)}")
    axes[0].set_title(f"account {account}: price, fills, margin ratio and actions")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_index(ax, entries: list[Entry], underlying: str) -> None:
    ticks = [e for e in entries if e.what == "IndexPrice" and e.instrument == underlying and e.price is not None]
    ax.plot([_dt(e.time_ms) for e in ticks], [e.price for e in ticks], color="tab:blue", linewidth=1.2,
            label=f"{underlying} index")
    ax.set_ylabel(f"{underlying} index\n(USD)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)


def _draw_instrument(ax, entries: list[Entry], name: str) -> None:
    marks = [e for e in entries if e.what == "MarkPrice" and e.instrument == name and e.price is not None]
    if marks:
        ax.plot([_dt(e.time_ms) for e in marks], [e.price for e in marks], color="tab:gray", linewidth=1.0,
                label="mark")
    opened = [e for e in entries if e.what == "PositionUpdate" and e.instrument == name and e.price]
    if opened:
        ax.scatter([_dt(e.time_ms) for e in opened], [e.price for e in opened], marker="o", s=14,
                   facecolors="none", edgecolors="tab:blue", label="position entry price")
    for side, marker, color in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
        fills = [e for e in entries if e.kind == "execution" and e.instrument == name and e.quantity
                 and e.price is not None and e.fields.get("side") == side]
        if fills:
            ax.scatter([_dt(e.time_ms) for e in fills], [e.price for e in fills], marker=marker, color=color, s=30,
                       zorder=5, label=f"{side} fills (avg price)")
    ax.set_ylabel(f"{name}\n(USD)", fontsize=8)
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(alpha=0.3)


def _draw_margin(ax, entries: list[Entry], snapshots: list[Exposure]) -> None:
    if snapshots:
        ratios = [math.nan if x.margin_ratio is None else x.margin_ratio for x in snapshots]  # NaN: a gap
        ax.plot([_dt(x.time_ms) for x in snapshots], ratios, color="tab:purple", linewidth=1.2,
                label="margin ratio (exposure snapshots)")
    for kind, marker, color, label in (("breach", "x", "tab:red", "at breaches"),
                                       ("action", "o", "tab:purple", "at actions")):
        points = [e for e in entries if e.kind == kind and e.margin_ratio is not None]
        if points:
            ax.scatter([_dt(e.time_ms) for e in points], [e.margin_ratio for e in points], marker=marker, s=24,
                       color=color, zorder=5, label=label)
    thresholds = [e for e in entries if e.kind == "breach" and e.fields.get("threshold") is not None]
    if thresholds:
        ax.scatter([_dt(e.time_ms) for e in thresholds], [e.fields["threshold"] for e in thresholds], marker="_",
                   color="tab:orange", s=80, label="breach threshold")
    ax.axhline(1.0, color="tab:red", linestyle=":", linewidth=1, label="liquidatable (1)")
    ax.set_ylabel("margin ratio\n(maint. / equity)")
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)


def _draw_actions(ax, entries: list[Entry]) -> None:
    actions = [e for e in entries if e.kind == "action"]
    lanes = list(dict.fromkeys(e.what for e in actions))
    for lane, what in enumerate(lanes):
        times = [_dt(e.time_ms) for e in actions if e.what == what]
        ax.scatter(times, [lane] * len(times), marker="|", s=120, linewidths=1.5)
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.set_ylim(-0.7, max(len(lanes), 1) - 0.3)
    ax.set_ylabel("actions")
    ax.grid(alpha=0.3, axis="x")


def write_html(entries: list[Entry], account: str, png: Path, path: Path) -> Path:
    image = base64.b64encode(png.read_bytes()).decode()
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            iso_ms(e.time_ms), e.kind, e.what, e.instrument, "" if e.price is None else f"{e.price:g}",
            "" if e.margin_ratio is None else f"{e.margin_ratio:g}", e.detail, e.id, ", ".join(e.causes))) + "</tr>"
        for e in entries if e.kind != "input")
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Backstop incident: {html.escape(account)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head><body>
<h1>Account {html.escape(account)}</h1>
<img alt="price, margin ratio and actions" src="data:image/png;base64,{image}">
<h2>Breaches, actions, executions</h2>
<table><tr><th>time</th><th>kind</th><th>what</th><th>instrument</th><th>price</th><th>margin</th><th>detail</th>
<th>id</th><th>causes</th></tr>
{rows}
</table></body></html>
""")
    return path
