"""The solvency–efficiency frontier: capital efficiency (x) against bad debt (y), one curve per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def frontier_plot(curves: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        swept = [p for p in points if p["trigger"] is not None]
        ax.plot([p["capital_efficiency"] for p in swept], [p["bad_debt_usd"] for p in swept], marker="o", label=name)
        for p in swept:
            ax.annotate(f"{p['trigger']:g}", (p["capital_efficiency"], p["bad_debt_usd"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
        base = next(p for p in points if p["trigger"] is None)
        ax.scatter([base["capital_efficiency"]], [base["bad_debt_usd"]], marker="x", color="black")
    ax.set_xlabel("capital efficiency (share of opening notional not force-closed)")
    ax.set_ylabel("bad debt (USD)")
    ax.set_title("Solvency–efficiency frontier (x: no backstop; labels: margin-trigger ratio)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
