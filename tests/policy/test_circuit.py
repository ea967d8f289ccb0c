from __future__ import annotations

from pipelines.detect.detectors import Detectors
from pipelines.policy.actions import ActionType
from pipelines.policy.circuit import (
    CIRCUIT_ACTIONS,
    STATE_OF_ACTION,
    CircuitBreakers,
    CircuitParams,
    TradingState,
    order_refusal,
)

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


def test_each_state_has_its_own_market_wide_action() -> None:
    assert {state: str(action) for state, action in CIRCUIT_ACTIONS.items()} == {
        TradingState.HALTED: "halt", TradingState.REDUCING: "market_reduce_only", TradingState.ACTIVE: "resume"}
    assert ActionType.MARKET_REDUCE_ONLY != ActionType.REDUCE_ONLY  # the per-account one is another action
    assert {STATE_OF_ACTION[action] for action in CIRCUIT_ACTIONS.values()} == set(TradingState)


def test_halted_and_reducing_refuse_risk_increasing_orders_and_accept_reducing_ones() -> None:
    for state in (TradingState.HALTED, TradingState.REDUCING):
        assert not state.allows_risk_increase
        assert order_refusal(state, "BTC-PERPETUAL", reduces=True) is None
    assert "halted" in order_refusal(TradingState.HALTED, "BTC-PERPETUAL", reduces=False)
    assert "reduce-only" in order_refusal(TradingState.REDUCING, "BTC-PERPETUAL", reduces=False)
    assert TradingState.ACTIVE.allows_risk_increase
    assert order_refusal(TradingState.ACTIVE, "BTC-PERPETUAL", reduces=False) is None
