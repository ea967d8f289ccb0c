"""``Detectors.margin_unmoved``: where it says a revaluation moves no margin condition, ``on_margin``
reports nothing and changes only the margin watermark, which ``advance_margin`` moves the same."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.detect.detectors import Detectors

CONDITION = st.tuples(st.one_of(st.none(), st.integers(0, 5_000)), st.booleans())  # pending since, firing
RATIOS = st.one_of(st.floats(0.0, 2.5), st.just(math.nan), st.sampled_from([0.95, 1.0, 1.5]))


def held(hold_ms: int, condition: tuple[int | None, bool]) -> dict:
    since, firing = condition
    return {"hold_ms": hold_ms, "pending_since_ms": since, "firing": firing}


def codes(detectors: Detectors, account: str) -> tuple[np.ndarray, ...]:
    """``Detectors.margin_code`` as the one-account arrays ``margin_unmoved`` reads."""
    return tuple(np.array([value]) for value in detectors.margin_code(account))


@settings(max_examples=400, deadline=None)
@given(margin=CONDITION, liquidation=CONDITION, ratio=RATIOS, t=st.integers(0, 10_000), known=st.booleans())
def test_an_unmoved_account_only_advances_its_watermark(margin, liquidation, ratio, t, known) -> None:
    detectors, twin = Detectors(), Detectors()
    if known:
        state = {"margin": held(3_000, margin), "liquidation": held(0, liquidation),
                 "withdrawals": [{"event_time_ms": t, "amount_usd": 1e6, "ref": "w"}],
                 "collateral_watermark": None, "margin_watermark": None}
        detectors.restore_account("a", state)
        twin.restore_account("a", state)
    unmoved = detectors.margin_unmoved(*codes(detectors, "a"), np.array([ratio]), t)
    if unmoved[0]:
        assert detectors.on_margin("a", t, ratio, "r") == []
        twin.advance_margin(["a"], t)
        assert detectors.account_state("a") == twin.account_state("a")


def test_a_pending_shortfall_moves_once_held_for_the_grace() -> None:
    detectors = Detectors()
    detectors.on_margin("a", 1_000, 1.05, "r")  # pending since 1,000; fires at 4,000
    held_codes = codes(detectors, "a")
    assert detectors.margin_unmoved(*held_codes, np.array([1.05]), 3_999)[0]
    assert not detectors.margin_unmoved(*held_codes, np.array([1.05]), 4_000)[0]
    assert not detectors.margin_unmoved(*held_codes, np.array([0.9]), 2_000)[0]  # cleared
    assert not detectors.margin_unmoved(*codes(detectors, "b"), np.array([0.5]), 2_000)[0]  # none held
