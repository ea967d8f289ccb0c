"""The market board's per-tick market and conditions: made again only when what they are made of
changed, and then exactly what a board made afresh gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.engine.market_board import MarketBoard
from pipelines.risk.adaptive import HeldConditions, MarketConditions
from pipelines.risk.market import MarketError, MarketState, UnderlyingMarket


def fresh(board: MarketBoard) -> MarketBoard:
    return MarketBoard.from_state(board.state())


def test_a_market_state_follows_every_index_and_vol_and_checks_each_value_it_reads() -> None:
    board = MarketBoard(0.5, {"BTC": 30_000.0, "ETH": 2_000.0}, {"ETH": 0.7})
    assert board.market_state(1, ("BTC", "ETH")) == MarketState(
        1, {"BTC": UnderlyingMarket(30_000.0, 0.5), "ETH": UnderlyingMarket(2_000.0, 0.7)})
    changes = [("index", 31_000.0), ("vol", 0.9), ("index", 31_000), ("index", 31_000.0), ("vol", 0.9)]
    for t, (field, value) in enumerate(changes, 2):
        getattr(board, field)["BTC"] = value
        state = board.market_state(t, ("BTC", "ETH"))
        assert state == fresh(board).market_state(t, ("BTC", "ETH"))
        assert type(state.underlyings["BTC"].index) is float
    board.index["BTC"] = 1.0
    board.market_state(8, ("BTC",))
    for bad in (True, math.nan, -1.0, math.inf):  # True == 1.0, but no index
        board.index["BTC"] = bad
        with pytest.raises(MarketError, match="underlyings.BTC.index"):
            board.market_state(9, ("BTC",))
    board.index["BTC"] = 31_000.0
    assert board.market_state(10, ("BTC",)).underlyings == {"BTC": UnderlyingMarket(31_000.0, 0.9)}


def test_conditions_are_made_again_when_a_realised_vol_or_a_depth_changes() -> None:
    board = MarketBoard(0.5, {"BTC": 30_000.0}, depth_usd={"BTC-PERPETUAL": 5e6, "BTC-27DEC26": 2e6})
    first = board.conditions({"BTC": 0.4})
    assert first == HeldConditions({"BTC": 0.4}, {"BTC": 2e6})
    assert board.conditions({"BTC": 0.4}) is first
    board.depth_usd["BTC-27DEC26"] = 1e6
    assert board.conditions({"BTC": 0.4}) == HeldConditions({"BTC": 0.4}, {"BTC": 1e6})
    assert board.conditions({"BTC": 0.45}) == HeldConditions({"BTC": 0.45}, {"BTC": 1e6})
    board.depth_usd["ETH-PERPETUAL"] = 3e6
    assert board.conditions({"BTC": 0.45}) == HeldConditions({"BTC": 0.45}, {"BTC": 1e6, "ETH": 3e6})
    assert first == HeldConditions({"BTC": 0.4}, {"BTC": 2e6})  # what was given is not changed


def test_the_boards_conditions_cannot_be_written_to() -> None:
    """The board hands the same conditions to tick after tick, and a compiled layout keeps its
    market rows for them: a write into them raises instead of changing every later tick, and the
    dicts they were made from are theirs no more."""
    board = MarketBoard(0.5, {"BTC": 30_000.0}, depth_usd={"BTC-PERPETUAL": 5e6})
    vols = {"BTC": 0.4}
    held = board.conditions(vols)
    for mapping in (held.realised_vol, held.depth_usd):
        with pytest.raises(TypeError):
            mapping["BTC"] = 1.0  # type: ignore[index]
    vols["BTC"] = 0.9
    assert held.realised_vol == {"BTC": 0.4} and held.depth_usd == {"BTC": 5e6}
    assert board.conditions({"BTC": 0.4}) is held


def test_the_boards_conditions_arrays_are_those_of_their_values() -> None:
    """``HeldConditions.arrays``, made once and shared, hold what ``MarketConditions.arrays`` makes
    of the same values, for each underlyings tuple asked for, the board's buffers' included, as
    realised vols, depths and the underlyings the board is asked with change."""
    board = MarketBoard(0.5, {"BTC": 30_000.0}, depth_usd={"BTC-PERPETUAL": 5e6, "ETH-PERPETUAL": 2e6})
    buffers = []
    for vols, underlyings in (({"BTC": 0.4}, ("BTC", "ETH")), ({"BTC": 0.5, "ETH": 0.7}, ("BTC", "ETH")),
                              ({"BTC": 0.5, "ETH": 0.7}, ("BTC", "ETH")), ({"ETH": 0.6}, ("ETH", "BTC", "SOL")),
                              ({"ETH": 0.6, "SOL": 0.9}, ("ETH", "BTC", "SOL")), ({}, ())):
        if len(buffers) == 4:
            board.depth_usd["ETH-27DEC26"] = 1e6
        held = board.conditions(vols, underlyings)
        plain = MarketConditions(dict(held.realised_vol), dict(held.depth_usd))
        for asked in (underlyings, ("ETH",), ("SOL", "BTC"), underlyings):
            for got, want in zip(held.arrays(asked), plain.arrays(asked)):
                np.testing.assert_array_equal(got, want)
        buffers.append(held.arrays(underlyings)[0])
    assert buffers[0] is buffers[1] is buffers[2] and buffers[3] is buffers[4]  # written in place
    assert buffers[2] is not buffers[3]


def test_conditions_asked_after_newer_ones_were_made_leave_the_newer_ones_arrays_alone() -> None:
    """Only the board's latest conditions write into its buffers: older ones asked later (a late
    holder) get arrays of their own values and the latest's arrays keep theirs; a tuple of the
    same length in another order gets buffers of its own order."""
    board = MarketBoard(0.5, {"BTC": 30_000.0}, depth_usd={"BTC-PERPETUAL": 5e6, "ETH-PERPETUAL": 2e6})
    old = board.conditions({"BTC": 0.4}, ("BTC",))
    new = board.conditions({"BTC": 0.9}, ("BTC",))
    latest = new.arrays(("BTC",))[0]
    assert old.arrays(("BTC",))[0].tolist() == [0.4]
    assert latest.tolist() == [0.9] and new.arrays(("BTC",))[0] is latest
    swapped = board.conditions({"BTC": 0.5, "ETH": 0.7}, ("BTC", "ETH"))
    assert swapped.arrays(("BTC", "ETH"))[0].tolist() == [0.5, 0.7]
    again = board.conditions({"BTC": 0.6, "ETH": 0.8}, ("ETH", "BTC"))
    assert [a.tolist() for a in again.arrays(("ETH", "BTC"))] == [[0.8, 0.6], [2e6, 5e6]]
