"""The frontier plot: a colour per scenario, a marker shape per swept trigger."""

from __future__ import annotations

from pipelines.backtest import plot


def curve(bad_debt_without: float, points: list[tuple[float, float, float]]) -> list[dict]:
    base = {"label": "no backstop", "trigger": None, "bad_debt_usd": bad_debt_without, "capital_efficiency": 0.95}
    return [base] + [{"label": f"trigger {t:g}", "trigger": t, "bad_debt_usd": debt, "capital_efficiency": eff}
                     for t, debt, eff in points]


CURVES = {"crash-a": curve(685_000.0, [(1.3, 28_000.0, 0.38), (1.0, 0.0, 0.74)]),
          "crash-b": curve(1_100.0, [(0.8, 0.0, 0.8), (1.3, 320.0, 0.87)])}


def test_each_swept_trigger_has_its_own_marker_in_increasing_order() -> None:
    markers = plot.trigger_markers(CURVES)
    assert list(markers) == [0.8, 1.0, 1.3]
    assert len(set(markers.values())) == 3 and plot.NO_BACKSTOP_MARKER not in markers.values()


def test_frontier_plot_writes_a_png(tmp_path) -> None:
    out = plot.frontier_plot(CURVES, tmp_path / "frontier.png")
    assert out.read_bytes().startswith(b"\x89PNG")
