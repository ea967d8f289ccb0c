"""``backstop incident plot``: price, margin ratio and actions over time for one account (PNG, HTML).

Top panel: index price of the account's underlying(s) and the mark of its instruments (each on
its own axis scale, normalised to the first value when several are drawn), with vertical lines
at actions (labelled with the action type) and markers at fills. Bottom panel: margin ratio from
the breaches, with the breach thresholds. The HTML page embeds the PNG and the timeline table.
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from pipelines.audit.render import iso_ms
from pipelines.audit.timeline import Entry
from pipelines.errors import UserError


def _dt(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def plot_png(entries: list[Entry], account: str, path: Path) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise UserError("incident plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not entries:
        raise UserError(f"nothing recorded for account {account} in that time range")
    fig, (ax_price, ax_margin) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), height_ratios=(2, 1))
    series: dict[str, list[tuple[datetime.datetime, float]]] = {}
    for e in entries:
        if e.kind == "input" and e.what in ("IndexPrice", "MarkPrice", "OraclePrice") and e.price is not None:
            series.setdefault(f"{e.instrument} {e.what.replace('Price', '').lower()}", []).append((_dt(e.time_ms), e.price))
    normalise = len(series) > 1
    for label, points in sorted(series.items()):
        xs = [p[0] for p in points]
        ys = [p[1] / points[0][1] if normalise and points[0][1] else p[1] for p in points]
        ax_price.plot(xs, ys, label=label, linewidth=1.2)
    ax_price.set_ylabel("price / first price" if normalise else "price")
    for e in entries:
        if e.kind == "action":
            ax_price.axvline(_dt(e.time_ms), color="tab:red", alpha=0.5, linestyle="--")
            ax_price.annotate(e.what, (_dt(e.time_ms), 1.0), xycoords=("data", "axes fraction"), rotation=90,
                              va="top", ha="right", fontsize=7, color="tab:red")
    fills = [e for e in entries if e.kind == "execution" and e.quantity]
    if fills:
        ax_fill = ax_price.twinx()
        ax_fill.scatter([_dt(e.time_ms) for e in fills], [e.price or 0 for e in fills], marker="v", color="black",
                        label="fills (avg price)", zorder=5)
        ax_fill.set_ylabel("fill price")
        ax_fill.legend(loc="lower right", fontsize=8)
    if series:
        ax_price.legend(loc="upper left", fontsize=8)
    margin = [(e.time_ms, e.margin_ratio, e.fields.get("threshold")) for e in entries
              if e.kind == "breach" and e.margin_ratio is not None]
    if margin:
        ax_margin.plot([_dt(m[0]) for m in margin], [m[1] for m in margin], marker="o", label="margin ratio")
        thresholds = [(m[0], m[2]) for m in margin if m[2] is not None]
        if thresholds:
            ax_margin.step([_dt(t[0]) for t in thresholds], [t[1] for t in thresholds], where="post",
                           linestyle=":", color="tab:orange", label="threshold")
        ax_margin.legend(loc="upper left", fontsize=8)
    ax_margin.set_ylabel("margin ratio")
    ax_margin.set_xlabel("event time (UTC)")
    ax_price.set_title(f"account {account}: price, margin ratio and actions")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
