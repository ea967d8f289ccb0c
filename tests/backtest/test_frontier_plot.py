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


def _swept(points: list[dict]) -> list[dict]:
    return sorted((p for p in points if p["trigger"] is not None), key=lambda p: p["trigger"])


def test_each_curve_is_drawn_through_its_swept_points_in_trigger_order() -> None:
    fig = plot.frontier_figure(CURVES)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == set(CURVES)
    for name, points in CURVES.items():
        swept = _swept(points)
        assert list(lines[name].get_xdata()) == [p["capital_efficiency"] for p in swept]
        assert list(lines[name].get_ydata()) == [p["bad_debt_usd"] for p in swept]
    drawn = {tuple(xy) for c in ax.collections for xy in c.get_offsets()}
    expected = {(p["capital_efficiency"], p["bad_debt_usd"]) for points in CURVES.values() for p in points}
    assert drawn == expected  # every swept point and every no-backstop cross, nothing else
    assert not [c for c in ax.collections if c.get_gid() == plot.CHOSEN_GID]


def test_the_calibrated_trigger_is_ringed_on_every_curve_that_has_it() -> None:
    ax = plot.frontier_figure(CURVES, chosen=1.3).axes[0]
    rings = [c for c in ax.collections if c.get_gid() == plot.CHOSEN_GID]
    assert sorted(tuple(xy) for c in rings for xy in c.get_offsets()) == [(0.38, 28_000.0), (0.87, 320.0)]
    assert "calibrated: trigger 1.3" in [t.get_text() for legend in ax.figure.legends + [ax.get_legend()]
                                         for t in legend.get_texts()]


def test_frontier_plot_writes_the_figure(tmp_path) -> None:
    out = plot.frontier_plot(CURVES, tmp_path / "frontier.png", chosen=1.0)
    assert out.stat().st_size > 10_000
