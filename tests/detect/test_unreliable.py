"""``Detectors.unreliable``: what a liquidation waits on, the oracles of the underlyings asked
about that are unreliable with every manipulated or delisted instrument, empty or not."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.detect.detectors import Detectors

UNDERLYINGS = ("BTC", "ETH", "SOL")
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "SOL-PERPETUAL")
SOME = st.lists(st.sampled_from(UNDERLYINGS), max_size=3, unique=True)
HELD = st.lists(st.sampled_from(INSTRUMENTS), max_size=3, unique=True)


@settings(max_examples=300, deadline=None)
@given(stale=SOME, deviating=SOME, off_twap=SOME, firing=HELD, delisted=HELD, asked=SOME)
def test_unreliable_is_the_oracles_asked_about_and_the_instruments_held_back(stale, deviating, off_twap, firing,
                                                                            delisted, asked) -> None:
    detectors = Detectors()
    state = detectors.market_state()
    state.update(oracle_stale=[{"underlying": u, "source": "pyth"} for u in stale], oracle_deviating=deviating,
                 oracle_off_twap=off_twap, mark_firing={name: 100.0 for name in firing}, mark_delisted=delisted)
    detectors.restore_market(state)
    expected = ({u for u in asked if detectors.oracle_unreliable(u)} | detectors.manipulated().keys()
                | detectors.delisted())
    assert detectors.unreliable(asked) == expected
    assert detectors.unreliable(asked) == ({u for u in asked if u in {*stale, *deviating, *off_twap}}
                                           | set(firing) | set(delisted))
