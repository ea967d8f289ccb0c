"""``backstop backtest --calibrate``: the most capital-efficient margin trigger within a bad-debt budget.

Definitions (docs/replay.md, Calibration):

- A *point* is one margin-trigger ratio of the sweep (``run.sweep_thresholds``: the liquidation,
  reduce and call levels scale with it).
- *Open interest* of a scenario: the opening notional of its run without the backstop
  (``Result.initial_notional_usd``, the USD notional of every account's positions once all are
  open). Not the swept runs': at a low trigger the backstop starts closing positions within the
  first second, before the opening notional is taken.
- The *budget* is a USD amount (``0`` included) or a share of open interest (``0.5%oi``), judged
  per scenario: a point is *within budget* when its bad debt is at most the budget on every
  calibration scenario.
- *Capital efficiency* of a point: the mean over the calibration scenarios of each run's capital
  efficiency (share of the opening notional not force-closed), every scenario weighing the same.
  The chosen point is the most capital-efficient point within budget; ties go to the lower total
  bad debt, then to the lower trigger.
- Held-out scenarios take no part in the choice: they run at the chosen point only (and without
  the backstop) and are reported apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.backtest.run import sweep, sweep_thresholds, threshold_params
from pipelines.config import EngineSettings
from pipelines.errors import UserError
from pipelines.scenarios.library import Scenario

#: the default trigger grid: from acting well before maintenance margin is reached to after it
DEFAULT_TRIGGERS = (0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
#: USD amounts above this are a typo (decision 0003)
MAX_USD = 1e15
OI_SUFFIX = "%oi"


@dataclasses.dataclass(frozen=True)
class Budget:
    """At most ``usd`` of bad debt per scenario, or at most ``percent_of_oi`` % of its open interest."""

    usd: float | None = None
    percent_of_oi: float | None = None

    def limit_usd(self, open_interest_usd: float) -> float:
        """The budget in USD on a scenario with this open interest."""
        if self.percent_of_oi is not None:
            return self.percent_of_oi / 100.0 * open_interest_usd
        return float(self.usd or 0.0)

    def __str__(self) -> str:
        if self.percent_of_oi is not None:
            return f"{self.percent_of_oi:g}{OI_SUFFIX}"
        return f"${self.usd:,.2f}"


def budget(text: str) -> Budget:
    """An argparse ``type``: ``0``, a USD amount (``25000``) or a share of open interest (``0.5%oi``)."""
    expected = f"expected 0, a USD amount such as 25000, or a share of open interest such as 0.5{OI_SUFFIX}"
    raw = text.strip().lower()
    percent = raw.endswith(OI_SUFFIX)
    try:
        value = float(raw.removesuffix(OI_SUFFIX) if percent else raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
    high = 100.0 if percent else MAX_USD
    if not (math.isfinite(value) and 0 <= value <= high):
        raise argparse.ArgumentTypeError(f"{expected} (from 0 to {high:g}), got {text!r}")
    return Budget(percent_of_oi=value) if percent else Budget(usd=value)


def default_held_out(scenarios: Sequence[Scenario]) -> list[str]:
    """The most recent quarter of ``scenarios`` by incident date (``len // 4``: none below four;
    of the eight bundled, jelly-2025 and october-2025): calibrate on the past, test on the later."""
    by_date = sorted(scenarios, key=lambda s: (datetime.datetime.fromisoformat(s.start.replace("Z", "+00:00")),
                                               s.name))
    return [s.name for s in by_date[len(by_date) - len(by_date) // 4:]]


def split(scenarios: Sequence[Scenario], held_out: Sequence[str]) -> tuple[list[Scenario], list[Scenario]]:
    """(calibration, held-out) in ``scenarios``' order. Every held-out name must be among the
    scenarios, and at least one scenario must be left to calibrate on."""
    names = {s.name for s in scenarios}
    unknown = sorted(set(held_out) - names)
    if unknown:
        raise UserError(f"--held-out {','.join(unknown)}: not among the scenarios run ({', '.join(sorted(names))})")
    calibration = [s for s in scenarios if s.name not in held_out]
    if not calibration:
        raise UserError("--held-out leaves no scenario to calibrate on")
    return calibration, [s for s in scenarios if s.name in held_out]


@dataclasses.dataclass(frozen=True)
class Choice:
    """The chosen trigger and what it scores on the calibration scenarios."""

    trigger: float
    mean_capital_efficiency: float
    total_bad_debt_usd: float


def swept_point(points: Sequence[dict[str, Any]], trigger: float | None) -> dict[str, Any]:
    """The point of a sweep curve at ``trigger`` (None: the run without the backstop)."""
    return next(p for p in points if p["trigger"] == trigger)


def open_interest(points: Sequence[dict[str, Any]]) -> float:
    """A scenario's open interest: the opening notional of its run without the backstop."""
    return swept_point(points, None)["initial_notional_usd"]


def choose(curves: dict[str, list[dict[str, Any]]], limit: Budget) -> Choice:
    """The most capital-efficient trigger of ``curves`` (the calibration scenarios' sweeps) whose
    bad debt is within ``limit`` on every scenario; a ``UserError`` naming the closest point when
    none is."""
    triggers = sorted({p["trigger"] for points in curves.values() for p in points if p["trigger"] is not None})
    within = []
    for trigger in triggers:
        at = [swept_point(points, trigger) for points in curves.values()]
        limits = [limit.limit_usd(open_interest(points)) for points in curves.values()]
        if all(p["bad_debt_usd"] <= usd for p, usd in zip(at, limits)):
            within.append(Choice(trigger, sum(p["capital_efficiency"] for p in at) / len(at),
                                 sum(p["bad_debt_usd"] for p in at)))
    if not within:
        raise UserError(_none_within(curves, triggers, limit))
    return max(within, key=lambda c: (c.mean_capital_efficiency, -c.total_bad_debt_usd, -c.trigger))


def _none_within(curves: dict[str, list[dict[str, Any]]], triggers: Sequence[float], limit: Budget) -> str:
    """The error when no trigger is within budget: the point whose worst overshoot is smallest."""
    def overshoot(trigger: float) -> tuple[float, str, float]:
        worst = max((swept_point(points, trigger)["bad_debt_usd"] - limit.limit_usd(open_interest(points)), name)
                    for name, points in curves.items())
        return worst[0], worst[1], trigger

    _, name, trigger = min(overshoot(t) for t in triggers)
    least = swept_point(curves[name], trigger)["bad_debt_usd"]
    return (f"no swept trigger keeps bad debt within the budget {limit} on every calibration scenario: the closest, "
            f"trigger {trigger:g}, still leaves ${least:,.2f} on {name}")


def engine_section(trigger: float) -> dict[str, float]:
    """The ``[engine]`` settings of the backtest's engine at ``trigger`` (every key set)."""
    params = threshold_params(**dict(sweep_thresholds(trigger)))
    d, ladder = params.detectors, params.ladder
    return {"margin_trigger_ratio": d.margin_trigger_ratio, "margin_clear_ratio": d.margin_clear_ratio,
            "liquidation_ratio": d.liquidation_ratio, "call_ratio": ladder.call_ratio,
            "reduce_ratio": ladder.reduce_ratio, "release_ratio": ladder.release_ratio}


def check_section(section: dict[str, float]) -> None:
    """Refuse, with the worker's own ``UserError``, an ``[engine]`` section the worker would
    refuse at load (``EngineSettings``: each ratio's range, then the levels' order)."""
    EngineSettings(**section).engine_params()


def check_triggers(triggers: Sequence[float]) -> None:
    """Refuse any trigger whose ``engine_section`` the worker would refuse, naming it."""
    for trigger in triggers:
        try:
            check_section(engine_section(trigger))
        except UserError as exc:
            raise UserError(f"trigger {trigger:g} gives settings the worker refuses: {exc}") from None


def write_config(path: str | Path, section: dict[str, float], comments: Sequence[str]) -> Path:
    """A TOML settings file holding ``section`` as ``[engine]``, ``comments`` above it. A section
    the worker would refuse (``check_section``) is a ``UserError`` and nothing is written."""
    check_section(section)
    lines = [f"# {line}" for line in comments] + ["[engine]"]
    lines += [f"{key} = {float(value)!r}" for key, value in section.items()]
    out = Path(path)
    out.write_text("\n".join(lines) + "\n")
    return out


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A calibration's outcome: the choice, the sweep of the calibration scenarios, and the held-out
    scenarios at the chosen trigger (and without the backstop)."""

    budget: Budget
    choice: Choice
    calibration: dict[str, list[dict[str, Any]]]
    held_out: dict[str, list[dict[str, Any]]]

    def rows(self, curves: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Per scenario of ``curves``, its figures at the chosen trigger and its budget."""
        out = []
        for name, points in curves.items():
            p = swept_point(points, self.choice.trigger)
            oi = float(open_interest(points))  # a run's figures may be numpy scalars: JSON takes Python ones
            limit, bad_debt = float(self.budget.limit_usd(oi)), float(p["bad_debt_usd"])
            out.append({"scenario": name, "bad_debt_usd": bad_debt, "budget_usd": limit,
                        "within_budget": bad_debt <= limit, "capital_efficiency": float(p["capital_efficiency"]),
                        "open_interest_usd": oi})
        return out

    def summary(self) -> dict[str, Any]:
        """The outcome as JSON-ready data."""
        return {"budget": str(self.budget), "trigger": self.choice.trigger,
                "mean_capital_efficiency": self.choice.mean_capital_efficiency,
                "engine": engine_section(self.choice.trigger), "calibration": self.rows(self.calibration),
                "held_out": self.rows(self.held_out)}


def calibrate(scenarios: Sequence[Scenario], held_out: Sequence[str], triggers: Sequence[float], limit: Budget,
              seed: int | None = None, *, jobs: int = 1, progress: bool | None = None) -> Calibration:
    """Sweep ``triggers`` over the calibration scenarios, choose (``choose``), then run the held-out
    scenarios at the chosen trigger."""
    calibration, held = split(scenarios, held_out)
    curves = sweep(calibration, sorted(set(triggers)), seed, jobs=jobs, progress=progress)
    choice = choose(curves, limit)
    held_curves = sweep(held, [choice.trigger], seed, jobs=jobs, progress=progress) if held else {}
    return Calibration(limit, choice, curves, held_curves)
