"""The compiled triage (``kernels.triage``) against its numpy reference, the engine's composition
of ``_screen``, ``Detectors.margin_unmoved``, ``Ladder.hedge_waits``, ``Ladder.unmoved`` and
``Ladder.round_only`` and ``Ladder.round_due``, after ``Engine._times_to_breach``: the same fate
and the same time to breach, bit for bit, for every row of random code tables and books,
thresholds' edges and NaNs included."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.engine.engine import Engine, EngineParams, _Codes
from pipelines.policy.ladder import STATE_CODE, AccountState
from pipelines.policy.signing import SigningKey
from pipelines.risk.kernels import triage

KEY = SigningKey("test", b"test-signing-key-000000")
TIME_MS = 10_000
TARGET = (50_000.0 / 60_000.0) / 1.02  # a liquidating account's target ratio at the default buffer
RATIOS = st.one_of(st.sampled_from([0.0, 0.69, 0.7, 0.75, 0.8, TARGET, 0.85, 0.9, 1.0, 1.6, math.nan, math.inf]),
                   st.floats(0.0, 2.5))
TIMES = st.sampled_from([math.nan, 0.0, 8_999.0, 9_000.0, 9_001.0, 10_000.0, 11_000.0])
ROW = st.tuples(
    st.integers(0, 4), TIMES, st.booleans(), TIMES, st.booleans(), st.integers(-1, 2), TIMES, st.integers(-1, 2),
    TIMES, st.booleans(), st.booleans(),  # the table's COLUMNS
    # ratio, and the slack (equity - MM) the time to breach divides (a velocity of 1 on a delta of -1
    # makes the slack the time to breach)
    RATIOS, st.sampled_from([math.nan, -1.0, 0.0, 150_000.0, 299_999.0, 300_000.0, 600_000.0, math.inf]),
    st.sampled_from([math.nan, 0.0, 50_000.0]), st.sampled_from([-1.0, 0.0, 60_000.0, 100_000.0]))  # MM, IM
# per account and underlying: delta, the hedge in flight and the position in the perpetual (a hedge of
# 0.84 BTC at 60,000 is over the threshold)
DELTAS = st.lists(st.sampled_from([0.0, 0.5, -0.5, 0.84, 1.0, -2.0, math.nan]), min_size=2, max_size=2)
HEDGES = st.lists(st.sampled_from([0.0, -0.5, 0.5, -1.0, 2.0]), min_size=2, max_size=2)
PERPETUALS = st.lists(st.sampled_from([0.0, -0.5, 1.0, 3.0, -1.0 - 1e-13]), min_size=2, max_size=2)
GAMMAS = st.lists(st.sampled_from([0.0, 1e-9, -1e-6, 2e-3, -1e-19, math.nan]), min_size=2, max_size=2)
VELOCITIES = st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5, -2.0, 1e-12]), min_size=2, max_size=2)
INDEX = [60_000.0, 2_000.0]


def fates(table: np.ndarray, hedges: np.ndarray, perpetuals: np.ndarray, rows: np.ndarray, risk: object,
          allowed: list[float], velocity: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The reference's fates and times to breach (over every row of the book: NaN where not
    triaged), then the kernel's."""
    underlying = np.array([INDEX, allowed, velocity])
    out = []
    for compiled in (False, True):
        resident = _Codes(None, table, hedges, perpetuals, np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool),  # type: ignore[arg-type]
                          np.full(len(table), math.nan))
        fate = Engine(KEY, EngineParams(compiled=compiled))._fates(resident, rows, risk, underlying, TIME_MS)
        out.append((fate, resident.ttb))
    return out


def same(reference: tuple[np.ndarray, np.ndarray], kernel: tuple[np.ndarray, np.ndarray]) -> bool:
    """The same fates, of one dtype, and the same times to breach bit for bit."""
    return (reference[0].dtype == kernel[0].dtype == np.int8 and reference[0].tolist() == kernel[0].tolist()
            and reference[1].tobytes() == kernel[1].tobytes())


def test_the_state_codes_are_the_ladders() -> None:
    assert (triage.MARGIN_CALL, triage.REDUCE_ONLY, triage.LIQUIDATING, triage.LIQUIDATED) == tuple(
        STATE_CODE[s] for s in (AccountState.MARGIN_CALL, AccountState.REDUCE_ONLY, AccountState.LIQUIDATING,
                                AccountState.LIQUIDATED))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ROW, DELTAS, HEDGES, PERPETUALS, GAMMAS), min_size=1, max_size=40),
       st.lists(st.sampled_from([0.0, 1.0]), min_size=2, max_size=2), VELOCITIES, st.data())
def test_the_kernel_gives_the_references_fates(entries, allowed, velocity, data) -> None:
    n = len(entries)
    table = np.array([entry[0][:len(triage.COLUMNS)] for entry in entries], dtype=np.float64)
    ratio, slack, maintenance, initial = (np.array([entry[0][k] for entry in entries], dtype=np.float64)
                                          for k in range(len(triage.COLUMNS), len(triage.COLUMNS) + 4))
    delta, hedges, perpetuals, gamma = (np.array([entry[k] for entry in entries], dtype=np.float64)
                                        for k in (1, 2, 3, 4))
    rows = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))), dtype=np.int64)
    risk = type("Risk", (), {"margin_ratio": ratio, "equity": maintenance + slack, "maintenance": maintenance,
                             "initial": initial, "delta": delta, "gamma": gamma})
    reference, kernel = fates(table, hedges, perpetuals, rows, risk, allowed, velocity)
    assert same(reference, kernel)


def test_the_kernel_gives_the_references_bothover_the_ladders_grid() -> None:
    """Every combination of the ladder's inputs, hedged or not, for watched accounts whose
    margin conditions fire and stay firing (so that the ladder decides)."""
    states, times = range(5), [math.nan, 0.0, 8_999.0, 9_000.0, 9_001.0, 10_000.0]
    ratios = [0.0, 0.69, 0.7, 0.75, 0.8, TARGET, 0.85, 0.9, 1.0, 1.6, math.nan, math.inf]
    grid = np.array(list(itertools.product(states, times, (0.0, 1.0), times, (0.0, 1.0), (0.0, 1.0), ratios,
                                           (math.nan, 0.0, 299_999.0, 300_000.0), (math.nan, 0.0, 50_000.0),
                                           (-1.0, 0.0, 60_000.0), (0.0, 1.0))))
    n = len(grid)
    table = np.zeros((n, len(triage.COLUMNS)))
    columns = [triage.STATE, triage.LAST_ROUND, triage.IN_FLIGHT, triage.LAST_HEDGE, triage.HELD, triage.HEDGED]
    table[:, columns] = grid[:, :6]
    table[:, [triage.MARGIN, triage.LIQUIDATION]] = 2
    table[:, [triage.MARGIN_DUE, triage.LIQUIDATION_DUE]] = math.nan
    table[:, triage.WATCHED] = 1
    delta = np.zeros((n, 2))
    delta[:, 0] = grid[:, 10]  # a hedge of 1 BTC to send, or none
    delta[:, 1] = -1.0  # at a velocity of 1 (and none on the first underlying), the slack is the time to breach
    risk = type("Risk", (), {"margin_ratio": grid[:, 6], "equity": grid[:, 8] + grid[:, 7], "maintenance": grid[:, 8],
                             "initial": grid[:, 9], "delta": delta, "gamma": np.zeros((n, 2))})
    rows = np.arange(n)
    reference, kernel = fates(table, np.zeros((n, 2)), np.zeros((n, 2)), rows, risk, [1.0, 1.0], [0.0, 1.0])
    assert same(reference, kernel)
    finite = ~np.isnan(grid[:, 8])
    np.testing.assert_array_equal(reference[1][finite], grid[finite, 7])  # the grid's times to breach, NaN included
    grid_fates = reference[0], kernel[0]
    assert {triage.VISIT, triage.UNMOVED, triage.ROUND, triage.DUE_ROUND} <= set(grid_fates[0].tolist())
    due = grid_fates[0] == triage.DUE_ROUND  # liquidating, hedged or not: a liquidating account never hedges
    assert set(grid[due, 0].tolist()) == {triage.LIQUIDATING} and set(grid[due, 5].tolist()) == {0.0, 1.0}
    hedged_normal = (grid[:, 5] == 1) & (grid[:, 0] == 0)  # waits between its hedges, or has none to send
    assert {triage.VISIT, triage.UNMOVED} == set(grid_fates[0][hedged_normal].tolist())
