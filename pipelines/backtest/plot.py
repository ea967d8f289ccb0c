"""The solvency–efficiency frontier: capital efficiency (x) against bad debt (y), one curve per scenario.

Colour names the scenario (its curve, its sweep points and its no-backstop point alike); marker shape
names the margin-trigger ratio, with a cross for the run without the backstop. A calibrated
trigger (``backstop backtest --calibrate``) is ringed on every curve that has it (artists with gid
``CHOSEN_GID``). Bad debt is on a symmetric-log scale: zero stays on the axis and six-figure losses
share it with four-figure ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TRIGGER_MARKERS = ("o", "s", "D", "^", "v", "P", "*", "h", "p", "<", ">", "d")
NO_BACKSTOP_MARKER = "X"
LINEAR_BELOW_USD = 1_000.0
CHOSEN_GID = "calibrated"


def trigger_markers(curves: dict[str, list[dict[str, Any]]]) -> dict[float, str]:
    """A marker shape per swept trigger (in increasing order; shapes repeat past the twelfth)."""
    triggers = sorted({p["trigger"] for points in curves.values() for p in points if p["trigger"] is not None})
    return {t: TRIGGER_MARKERS[k % len(TRIGGER_MARKERS)] for k, t in enumerate(triggers)}


def frontier_plot(curves: dict[str, list[dict[str, Any]]], path: str | Path, chosen: float | None = None) -> Path:
    """Draws ``curves`` (``chosen``: the calibrated trigger, ringed) into the PNG ``path``."""
    import matplotlib.pyplot as plt

    fig = frontier_figure(curves, chosen)
    out = Path(path)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def frontier_figure(curves: dict[str, list[dict[str, Any]]], chosen: float | None = None) -> Any:
    """The frontier as a matplotlib figure: per scenario, a line through its swept points in
    trigger order (x capital efficiency, y bad debt), a marker per point, a cross for the run
    without the backstop, and with ``chosen`` a ring (gid ``CHOSEN_GID``) on its point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    markers = trigger_markers(curves)
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for k, (name, points) in enumerate(curves.items()):
        colour = colours(k % 10)
        swept = sorted((p for p in points if p["trigger"] is not None), key=lambda p: p["trigger"])
        ax.plot([p["capital_efficiency"] for p in swept], [p["bad_debt_usd"] for p in swept], color=colour,
                linewidth=1.2, alpha=0.8, label=name)
        for p in swept:
            ax.scatter([p["capital_efficiency"]], [p["bad_debt_usd"]], marker=markers[p["trigger"]], color=colour,
                       s=36, zorder=3)
        base = next(p for p in points if p["trigger"] is None)
        ax.scatter([base["capital_efficiency"]], [base["bad_debt_usd"]], marker=NO_BACKSTOP_MARKER, color=colour,
                   s=60, zorder=3)
        picked = [p for p in swept if p["trigger"] == chosen]
        if picked:
            ax.scatter([picked[0]["capital_efficiency"]], [picked[0]["bad_debt_usd"]], marker="o", s=220,
                       facecolors="none", edgecolors="black", linewidths=1.5, zorder=4, gid=CHOSEN_GID)
    ax.set_yscale("symlog", linthresh=LINEAR_BELOW_USD)
    ax.set_ylim(bottom=-LINEAR_BELOW_USD / 5)
    worst = max((p["bad_debt_usd"] for points in curves.values() for p in points), default=0.0)
    decades = range(round(math.log10(LINEAR_BELOW_USD)), math.ceil(math.log10(max(worst, LINEAR_BELOW_USD))) + 1)
    ticks = [0.0] + [10.0 ** d for d in decades]
    ax.set_yticks(ticks, [f"${t:,.0f}" for t in ticks])
    ax.set_xlabel("capital efficiency (share of opening notional not force-closed)")
    ax.set_ylabel(f"bad debt (USD, log above {LINEAR_BELOW_USD:,.0f})")
    ax.set_title("Solvency–efficiency frontier by scenario")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, title="scenario", fontsize=8, title_fontsize=8, loc="upper left",
               bbox_to_anchor=(1.01, 1), bbox_transform=ax.transAxes)
    shapes = [Line2D([], [], linestyle="", marker=m, color="black", label=f"trigger {t:g}") for t, m in markers.items()]
    shapes.append(Line2D([], [], linestyle="", marker=NO_BACKSTOP_MARKER, color="black", label="no backstop"))
    if chosen is not None:
        shapes.append(Line2D([], [], linestyle="", marker="o", markersize=11, markerfacecolor="none",
                             markeredgecolor="black", label=f"calibrated: trigger {chosen:g}"))
    ax.legend(handles=shapes, title="run", fontsize=8, title_fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0))
    fig.tight_layout()
    return fig
