from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.detect.breach import BreachKind
from pipelines.detect.detectors import DetectorParams, Detectors
from pipelines.errors import UserError

S = 1000


def kinds(breaches) -> list[tuple[str, bool]]:
    return [(b.kind.value, b.cleared) for b in breaches]


def test_margin_shortfall_needs_the_grace_period_and_clears_with_hysteresis() -> None:
    d = Detectors(DetectorParams(margin_grace_ms=3 * S))
    assert d.on_margin("a", 0, 1.05, "e0") == []
    assert d.on_margin("a", 1 * S, 0.97, "e1") == []  # dipped but not cleared: still pending
    fired = d.on_margin("a", 3 * S, 1.02, "e2")
    assert kinds(fired) == [("margin_shortfall", False)]
    assert (fired[0].window_start_ms, fired[0].window_end_ms) == (0, 3 * S)
    assert d.on_margin("a", 4 * S, 0.99, "e3") == []  # hovering under the trigger: no flap
    assert kinds(d.on_margin("a", 5 * S, 0.90, "e4")) == [("margin_shortfall", True)]


def test_short_spike_does_not_fire() -> None:
    d = Detectors(DetectorParams(margin_grace_ms=3 * S))
    assert d.on_margin("a", 0, 1.2, "e0") == []
    assert d.on_margin("a", 1 * S, 0.5, "e1") == []
    assert d.on_margin("a", 10 * S, 0.5, "e2") == []


def test_equity_below_liquidation_is_immediate() -> None:
    d = Detectors()
    out = d.on_margin("a", 0, 1.6, "e0")
    assert ("equity_below_liquidation", False) in kinds(out)


def test_withdraw_then_breach() -> None:
    d = Detectors(DetectorParams(margin_grace_ms=0))
    d.on_collateral("whale", 0, change_usd=-400_000, equity_usd=600_000, ref="w1")
    out = d.on_margin("whale", 60 * S, 1.1, "m1")
    withdraw = [b for b in out if b.kind is BreachKind.WITHDRAW_THEN_BREACH]
    assert len(withdraw) == 1 and withdraw[0].value == 400_000 and withdraw[0].triggers == ("w1", "m1")
    # a small withdrawal, or one long before, is not the pattern
    d2 = Detectors(DetectorParams(margin_grace_ms=0))
    d2.on_collateral("b", 0, change_usd=-1_000, equity_usd=600_000, ref="w")
    d2.on_collateral("c", 0, change_usd=-400_000, equity_usd=600_000, ref="w")
    assert not [b for b in d2.on_margin("b", S, 1.1, "m") if b.kind is BreachKind.WITHDRAW_THEN_BREACH]
    assert not [b for b in d2.on_margin("c", 3600 * S, 1.1, "m") if b.kind is BreachKind.WITHDRAW_THEN_BREACH]


def test_index_move_reports_each_circuit_level_once_then_clears() -> None:
    d = Detectors()
    levels = []
    for i, price in enumerate([100.0, 95.0, 92.0, 91.0, 86.0, 79.0, 78.0]):
        levels += [(b.level, round(b.value, 2)) for b in d.on_index("BTC", i * 60 * S, price, f"i{i}")]
    assert levels == [(1, -0.08), (2, -0.14), (3, -0.21)]
    assert d.circuit_level("BTC") == 3
    # an hour later the window has rolled past the crash; a calm price clears the level
    out = d.on_index("BTC", 2 * 3600 * S, 78.5, "late-calm")
    assert kinds(out) == [("index_move", True)]
    assert d.circuit_level("BTC") == 0


def test_index_move_up_also_counts() -> None:
    d = Detectors()
    d.on_index("ETH", 0, 100.0, "a")
    out = d.on_index("ETH", 60 * S, 108.0, "b")
    assert out[0].level == 1 and out[0].value > 0


def test_no_index_move_levels_turns_the_index_move_detector_off_but_not_the_stale_oracle_check() -> None:
    d = Detectors(DetectorParams(index_move_levels=()))
    d.on_oracle("BTC", "pyth", 0, 0, 100.0, "p0")
    assert d.on_index("BTC", 0, 100.0, "i0") == []
    out = d.on_index("BTC", 120 * S, 50.0, "i1")  # a 50 % crash, pyth silent for 120 s
    assert kinds(out) == [("oracle_stale", False)]
    assert d.circuit_level("BTC") == 0


@pytest.mark.parametrize("levels", [(0.13, 0.07), (0.07, 0.07), (0.0, 0.1), (-0.1,), (0.07, math.nan),
                                    (0.07, math.inf)])
def test_index_move_levels_must_be_positive_finite_and_ascending(levels: tuple[float, ...]) -> None:
    with pytest.raises(UserError, match="index_move_levels"):
        DetectorParams(index_move_levels=levels)


def test_iv_jump() -> None:
    d = Detectors()
    assert d.on_iv("BTC", 0, 0.50, "v0") == []
    assert d.on_iv("BTC", 60 * S, 0.58, "v1") == []
    out = d.on_iv("BTC", 120 * S, 0.62, "v2")
    assert kinds(out) == [("iv_jump", False)] and abs(out[0].value - 0.12) < 1e-12
    assert d.on_iv("BTC", 180 * S, 0.65, "v3") == []
    # ten minutes on, the 5-minute window no longer holds the low: the jump is gone
    assert kinds(d.on_iv("BTC", 600 * S, 0.65, "v4")) == [("iv_jump", True)]


def test_liquidity_drop_held_for_t_seconds() -> None:
    d = Detectors(DetectorParams(depth_min_usd=100.0, depth_hold_ms=30 * S))
    assert d.on_depth("X", 0, 50.0, "d0") == []
    assert d.on_depth("X", 29 * S, 50.0, "d1") == []
    assert kinds(d.on_depth("X", 30 * S, 60.0, "d2")) == [("liquidity_drop", False)]
    assert d.on_depth("X", 40 * S, 120.0, "d3") == []  # above the floor but below 1.5x: still stressed
    assert kinds(d.on_depth("X", 50 * S, 150.0, "d4")) == [("liquidity_drop", True)]


def test_oracle_stale_deviation_and_twap() -> None:
    d = Detectors()
    assert d.on_oracle("BTC", "pyth", 0, 0, 100.0, "p0") == []
    assert d.on_oracle("BTC", "chainlink", S, S, 100.5, "c0") == []
    out = d.on_oracle("BTC", "pyth", 2 * S, 2 * S, 103.0, "p1")  # sources 2.5 % apart
    assert ("oracle_deviation", False) in kinds(out)
    assert d.oracle_unreliable("BTC")
    out = d.on_index("BTC", 120 * S, 101.0, "i0")  # chainlink silent for 119 s
    assert [b.subject for b in out if b.kind is BreachKind.ORACLE_STALE] == ["BTC/chainlink", "BTC/pyth"]
    out = d.on_oracle("BTC", "chainlink", 121 * S, 121 * S, 101.0, "c1")
    assert ("oracle_stale", True) in kinds(out)
    d2 = Detectors()
    for i in range(10):
        d2.on_oracle("ETH", "pyth", i * 10 * S, i * 10 * S, 100.0, f"e{i}")
    out = d2.on_oracle("ETH", "pyth", 100 * S, 100 * S, 115.0, "spike")
    assert [b.subject for b in out] == ["ETH/twap"]


def test_a_source_far_behind_the_others_is_late_for_the_twap_only() -> None:
    """The TWAP window is the underlying's, the watermarks are per source: a source publishing
    a minute behind another is in time for its own staleness checks but late for the TWAP."""
    d = Detectors()
    d.on_oracle("BTC", "pyth", 60 * S, 60 * S, 100.0, "p0")
    assert d.on_oracle("BTC", "chainlink", 0, 0, 100.0, "c0") == [] and d.late_events == 1
    out = d.on_oracle("BTC", "pyth", 61 * S, 61 * S, 100.0, "p1")  # the TWAP goes on from pyth alone
    assert [(b.kind, b.subject) for b in out] == [(BreachKind.ORACLE_STALE, "BTC/chainlink")]


def test_mark_manipulation_only_when_it_backs_positions() -> None:
    d = Detectors()
    assert d.on_mark("MNGO-PERPETUAL", 0, 0.55, 0.038, backing_notional_usd=0.0, depth_usd=None, ref="m0") == []
    out = d.on_mark("MNGO-PERPETUAL", S, 0.55, 0.038, backing_notional_usd=1e8, depth_usd=None, ref="m1")
    assert kinds(out) == [("mark_manipulation", False)] and out[0].level == 0
    assert d.manipulated() == {"MNGO-PERPETUAL": 0.038}  # the mark clamped to its index
    assert kinds(d.on_mark("MNGO-PERPETUAL", 2 * S, 0.039, 0.038, 1e8, None, "m2")) == [("mark_manipulation", True)]
    assert d.manipulated() == {}


def pump(d: Detectors, interest_usd: float, depth_usd: float | None, prices=(0.0095, 0.011, 0.0135, 0.016),
         premium: float = 0.08, largest_share: float | None = 0.7) -> list:
    """A JELLY-like pump, 20 s apart: the index rises and the mark runs ``premium`` ahead of it,
    the venue publishing ``largest_share`` of the open interest in one holder's hands (None: not
    published)."""
    out = []
    for i, price in enumerate(prices):
        out += d.on_mark("JELLY-PERPETUAL", i * 20 * S, price, price / (1.0 + premium), interest_usd, depth_usd,
                         f"k{i}", largest_share)
    return out


def test_a_thin_book_pump_is_a_mark_manipulation_with_the_price_before_it() -> None:
    """The mark +68 % in a minute, 8 % over its index, with the open interest 20x the book's depth
    and 70 % of it in one account: a pump (the 25 % mark-vs-index rule could not see it). The
    breach starts at the window's low and names it; the price before the pump is what positions
    settle at. Prices do not clear it: delisting ends it, and the instrument is judged no more."""
    d = Detectors()
    out = pump(d, interest_usd=4e6, depth_usd=2e5)
    assert kinds(out) == [("mark_manipulation", False)]
    breach = out[0]
    assert (breach.level, breach.window_start_ms, breach.triggers) == (1, 0, ("k0", "k2"))
    assert breach.value == 0.0135 / 0.0095 - 1.0 and breach.threshold == 0.30
    assert d.manipulated() == {"JELLY-PERPETUAL": 0.0095}
    assert d.on_mark("JELLY-PERPETUAL", 100 * S, 0.0100, 0.0100, 4e6, 2e5, "k9", 0.7) == []
    assert d.manipulated() == {"JELLY-PERPETUAL": 0.0095}
    d.delist("JELLY-PERPETUAL")
    assert d.manipulated() == {} and d.delisted() == {"JELLY-PERPETUAL"}
    assert pump(d, interest_usd=4e6, depth_usd=2e5) == []


def test_a_move_on_a_deep_book_or_without_open_interest_is_no_pump() -> None:
    assert pump(Detectors(), interest_usd=4e6, depth_usd=1e6) == []  # OI only 4x depth
    assert pump(Detectors(), interest_usd=float("inf"), depth_usd=2e5) == []  # OI not published
    assert pump(Detectors(), interest_usd=4e6, depth_usd=None) == []  # no depth seen
    assert pump(Detectors(), interest_usd=0.0, depth_usd=0.0, largest_share=1.0) == []  # a new listing, empty book
    assert pump(Detectors(), interest_usd=4e6, depth_usd=2e5, prices=(0.0095, 0.0105, 0.012)) == []  # +26 %
    slow = Detectors(DetectorParams(pump_window_ms=30 * S))  # the same rise, spread past the window
    assert pump(slow, interest_usd=4e6, depth_usd=2e5, prices=(0.0095, 0.0105, 0.0118, 0.0131)) == []


def test_a_pump_needs_its_mark_off_the_index_and_concentrated_open_interest() -> None:
    assert pump(Detectors(), interest_usd=4e6, depth_usd=2e5, premium=0.0) == []  # the index went along
    assert pump(Detectors(), interest_usd=4e6, depth_usd=2e5, premium=0.01) == []  # within the band
    assert pump(Detectors(), interest_usd=4e6, depth_usd=2e5, largest_share=0.3) == []  # spread out
    assert pump(Detectors(), interest_usd=4e6, depth_usd=2e5, largest_share=0.49) == []  # just under half
    half = pump(Detectors(), interest_usd=4e6, depth_usd=2e5, largest_share=0.5)
    assert kinds(half) == [("mark_manipulation", False)]
    assert pump(Detectors(), interest_usd=4e6, depth_usd=2e5, largest_share=None) == []  # not published


def test_a_crash_with_the_mark_on_its_index_is_no_pump() -> None:
    """Mark and index fall 35 % together over 8 minutes, the open interest 10x the depth and all
    of it in one account: a crash, not a manipulation; nothing fires, nothing is held."""
    d = Detectors()
    out = []
    for i in range(600):
        price = 100.0 * (1.0 - 0.35 * min(i, 480) / 480)
        out += d.on_mark("BTC-PERPETUAL", i * S, price, price, 10e6, 1e6, f"r{i}", 1.0)
    assert out == [] and d.manipulated() == {}


def test_a_mark_off_its_index_clears_once_the_index_catches_up() -> None:
    """A mark 30 % over a lagging index fires (level 0); the index then catches up and stays:
    the breach clears on the index alone, though the mark stays far from its earlier price."""
    d = Detectors()
    assert kinds(d.on_mark("X-PERPETUAL", 0, 130.0, 100.0, math.inf, None, "a")) == [("mark_manipulation", False)]
    assert d.manipulated() == {"X-PERPETUAL": 100.0}
    out = d.on_mark("X-PERPETUAL", S, 130.0, 130.0, math.inf, None, "b")
    assert kinds(out) == [("mark_manipulation", True)] and d.manipulated() == {}


def test_late_events_are_counted_and_change_nothing() -> None:
    d = Detectors(DetectorParams(allowed_lateness_ms=5 * S, margin_grace_ms=0))
    d.on_margin("a", 100 * S, 0.5, "e0")
    assert d.on_margin("a", 10 * S, 5.0, "late") == []
    assert d.late_events == 1
    assert d.on_margin("a", 101 * S, 0.5, "e1") == []


EVENTS = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20), st.floats(0.5, 2.0)),
                  max_size=60)


@settings(max_examples=60)
@given(EVENTS, st.randoms())
def test_interleaving_across_keys_does_not_change_any_keys_breaches(events, rnd: random.Random) -> None:
    """A Kafka consumer interleaves partitions arbitrarily; per-key order is all that is preserved."""
    timed = [(acct, i * 500 + jitter * 100, ratio) for i, (acct, jitter, ratio) in enumerate(events)]

    def run(sequence):
        d = Detectors(DetectorParams(margin_grace_ms=2 * S))
        out = {}
        for n, (acct, t, ratio) in sequence:
            out.setdefault(acct, []).extend(b.breach_id for b in d.on_margin(acct, t, ratio, f"{acct}:{n}"))
        return out

    numbered = list(enumerate(timed))
    by_key: dict[str, list] = {}
    for n, event in numbered:
        by_key.setdefault(event[0], []).append((n, event))
    queues = {k: v[:] for k, v in by_key.items()}
    mixed = []
    while queues:
        key = rnd.choice(sorted(queues))
        mixed.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    assert run([(n, e) for n, e in numbered]) == run(mixed)
