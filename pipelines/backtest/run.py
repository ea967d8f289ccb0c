"""Run a scenario with and without the backstop, and sweeps over thresholds."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from pipelines.backtest.simulate import Result, Simulation, VenueSetup, sequence_events
from pipelines.detect.detectors import DetectorParams
from pipelines.engine.engine import EngineParams
from pipelines.execution.waterfall import LiquidityProvider
from pipelines.policy.ladder import LadderParams
from pipelines.scenarios.generate import Generated, generate
from pipelines.scenarios.library import Scenario


def venue_for(scenario: Scenario) -> VenueSetup:
    lps = tuple(LiquidityProvider(f"lp-{i + 1}", scenario.lp_capacity_usd / scenario.lp_count,
                                  scenario.lp_per_minute_usd / scenario.lp_count, 0.01 + 0.005 * i)
                for i in range(scenario.lp_count))
    return VenueSetup(scenario.insurance_fund_usd, lps, scenario.option_depth_share)


def engine_params(generated: Generated, *, margin_trigger_ratio: float = 1.0, liquidation_ratio: float = 1.5,
                  reduce_ratio: float = 0.9, call_ratio: float = 0.8) -> EngineParams:
    return EngineParams(detectors=DetectorParams(margin_trigger_ratio=margin_trigger_ratio,
                                                 margin_clear_ratio=min(0.95, margin_trigger_ratio * 0.95),
                                                 liquidation_ratio=liquidation_ratio),
                        ladder=LadderParams(call_ratio=min(call_ratio, reduce_ratio), reduce_ratio=reduce_ratio,
                                            release_ratio=min(0.7, call_ratio * 0.875)),
                        hedged_accounts=generated.hedged)


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, label: str, total: int, enabled: bool | None = None) -> None:
        self.label, self.total = label, max(total, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, done: int) -> None:
        if self.enabled:
            width = 30
            filled = int(width * min(done, self.total) / self.total)
            sys.stderr.write(f"\r{self.label:<28} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self(self.total)
            sys.stderr.write("\n")


def simulate(generated: Generated, *, with_backstop: bool, params: EngineParams | None = None,
             on_output: Callable[[str, Any], None] | None = None, progress: bool | None = None) -> Result:
    events = sequence_events(generated.events)
    sim = Simulation(generated.scenario.name, venue_for(generated.scenario), with_backstop=with_backstop,
                     params=params or engine_params(generated), on_output=on_output)
    label = f"{generated.scenario.name} {'with' if with_backstop else 'without'}"
    bar = Progress(label, len(events), progress)

    def tick(n: int) -> None:
        bar(n)

    # the opening notional, once every account has its positions (the setup events come first)
    result = sim.run(_with_opening(events, sim), progress=tick)
    bar.close()
    return result


def _with_opening(events, sim: Simulation):
    t_open = None
    for event in events:
        yield event
        if t_open is None and event[1] == "PositionUpdate":
            t_open = event[2]["event_time_ms"]
        elif t_open is not None and not sim.result.initial_notional_usd and event[2]["event_time_ms"] > t_open + 1000:
            sim.result.initial_notional_usd = sim.opening_notional()


def compare(scenario: Scenario, seed: int | None = None, *, params: dict[str, float] | None = None,
            progress: bool | None = None) -> dict[str, Any]:
    """With vs without the backstop (and, with ``params``, the backstop at alternative thresholds)."""
    generated = generate(scenario, seed)
    without = simulate(generated, with_backstop=False, progress=progress)
    with_ = simulate(generated, with_backstop=True, progress=progress)
    out = {"scenario": scenario.name, "seed": generated.seed, "accounts": len(generated.accounts),
           "with_backstop": with_.summary(), "without_backstop": without.summary()}
    saved = sorted(without.bankrupt_accounts - with_.bankrupt_accounts)
    out["accounts_saved"] = saved
    if params:
        alt = simulate(generated, with_backstop=True, params=engine_params(generated, **params), progress=progress)
        out["alternative"] = {"params": params, **alt.summary()}
    return out


def sweep(scenario: Scenario, triggers: list[float], seed: int | None = None, progress: bool | None = None
          ) -> list[dict[str, Any]]:
    """The backstop at several margin-trigger ratios (MM / equity that starts liquidation; the
    liquidation ratio and the ladder's call/reduce levels scale with it), plus the no-backstop
    point: capital efficiency vs bad debt."""
    generated = generate(scenario, seed)
    points = []
    base = simulate(generated, with_backstop=False, progress=progress)
    points.append({"label": "no backstop", "trigger": None, "bad_debt_usd": base.bad_debt_usd,
                   "capital_efficiency": base.capital_efficiency, "liquidated_notional_usd": base.liquidated_notional_usd})
    for trigger in triggers:
        params = engine_params(generated, margin_trigger_ratio=trigger, liquidation_ratio=1.5 * trigger,
                               reduce_ratio=0.9 * trigger, call_ratio=0.8 * trigger)
        r = simulate(generated, with_backstop=True, params=params, progress=progress)
        points.append({"label": f"trigger {trigger:g}", "trigger": trigger, "bad_debt_usd": r.bad_debt_usd,
                       "capital_efficiency": r.capital_efficiency, "liquidated_notional_usd": r.liquidated_notional_usd})
    return points
