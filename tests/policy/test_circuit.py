from __future__ import annotations

from pipelines.detect.detectors import Detectors
from pipelines.policy.circuit import CircuitBreakers, CircuitParams, TradingState

M = 60_000


def drive(prices: list[tuple[int, float]], params: CircuitParams | None = None):
    detectors, breakers = Detectors(), CircuitBreakers(params)
    changes = []
    for i, (t, price) in enumerate(prices):
        for breach in detectors.on_index("BTC", t, price, f"i{i}"):
            changes += breakers.on_breach(breach)
        changes += breakers.on_time("BTC", t)
    return breakers, changes


def test_crash_halts_then_reduces_then_resumes_after_cooldown_and_recovery() -> None:
    breakers, changes = drive([(0, 100.0), (1 * M, 92.0), (2 * M, 91.5), (3 * M, 91.0), (4 * M, 91.0)])
    assert [(c.state, c.level) for c in changes] == [(TradingState.HALTED, 1), (TradingState.REDUCING, 1)]
    assert not breakers.allows_risk_increase("BTC")
    # two hours later the one-hour window has forgotten the crash: the move clears, trading resumes
    _, more = drive([(0, 100.0), (1 * M, 92.0), (4 * M, 91.0), (125 * M, 91.2)])
    assert [c.state for c in more][-1] is TradingState.ACTIVE


def test_deeper_level_extends_the_halt_and_is_reported() -> None:
    breakers, changes = drive([(0, 100.0), (1 * M, 92.0), (2 * M, 86.0), (3 * M, 86.0), (10 * M, 86.0)])
    assert [(c.state, c.level) for c in changes] == [(TradingState.HALTED, 1), (TradingState.HALTED, 2)]
    assert breakers.trading_state("BTC") is TradingState.HALTED  # level 2 pauses 15 minutes from minute 2
    assert len(changes[1].breach_ids) == 2


def test_no_flapping_while_price_hovers_at_the_level() -> None:
    prices = [(0, 100.0)] + [(i * 10_000, 92.9 if i % 2 else 93.1) for i in range(1, 60)]
    _, changes = drive(prices)
    assert sum(c.state is TradingState.HALTED for c in changes) == 1
