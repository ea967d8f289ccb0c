"""Compiled triage of a tick's revalued accounts: which go through the engine's per-account path.

One pass over the revalued rows decides, per row, its ``fate``:

- ``QUIET``: screened out, provably idle (``Engine._screen``): not watched, ratio below every
  threshold and projected time to breach past the horizon;
- ``UNMOVED``: left exactly as it is (``Detectors.margin_unmoved`` and ``Ladder.unmoved``, and
  where hedged ``Ladder.hedge_waits``): only its margin watermark moves;
- ``ROUND``: liquidated, its due round would send nothing (``Ladder.round_only``, margin
  unmoved; a liquidated account never hedges): its watermark moves and the round is marked;
- ``DUE_ROUND``: liquidating, its round due and not released, margin unmoved (``Ladder.round_due``;
  a liquidating account never hedges): whether the round sends anything depends on the plan
  made at this tick, so the engine plans it with the visited rows and checks the round
  (``Ladder.round_orders``): one that sends nothing is marked as a ``ROUND`` row's is, one
  that sends is visited;
- ``VISIT``: anything else, through the detectors and the ladder one by one.

The screen and the ladder read each row's projected time to breach, which the same pass
computes (``revalue.time_to_breach_row``) and leaves in a resident array for the visits.
The engine keeps what this reads per row resident between ticks (``Engine._Codes``: the
``COLUMNS`` of a float64 table), so a tick costs one call. The reference is the engine's numpy
composition of those methods and of ``ladder.times_to_breach_ms`` (``EngineParams(compiled=False)``);
comparisons and + - * / sqrt alone are involved, each exactly rounded in both, so the two agree
exactly (``tests/risk/test_kernels_triage.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipelines.risk.kernels.revalue import time_to_breach_row

_kernel = njit(cache=True, error_model="numpy")

QUIET, VISIT, UNMOVED, ROUND, DUE_ROUND = 0, 1, 2, 3, 4  # fates

# columns of the resident table (``Engine._Codes``), one row per account of the built book
COLUMNS = ("state", "last_round", "in_flight", "last_hedge", "held", "margin", "margin_due", "liquidation",
           "liquidation_due", "watched", "hedged")
(STATE, LAST_ROUND, IN_FLIGHT, LAST_HEDGE, HELD, MARGIN, MARGIN_DUE, LIQUIDATION, LIQUIDATION_DUE, WATCHED,
 HEDGED) = range(11)
# ladder state codes, as ``policy.ladder.STATE_CODE`` gives them
NORMAL, MARGIN_CALL, REDUCE_ONLY, LIQUIDATING, LIQUIDATED = 0, 1, 2, 3, 4

# thresholds (``limits``), from the engine's parameters
LIMITS = ("quiet_below", "horizon_ms", "call_ratio", "reduce_ratio", "release_ratio", "round_ms", "buffer_factor",
          "margin_trigger_ratio", "margin_clear_ratio", "liquidation_ratio", "hedge_threshold_usd")
(QUIET_BELOW, HORIZON_MS, CALL_RATIO, REDUCE_RATIO, RELEASE_RATIO, ROUND_MS, BUFFER_FACTOR, MARGIN_TRIGGER,
 MARGIN_CLEAR, LIQUIDATION_RATIO, HEDGE_THRESHOLD) = range(11)


@_kernel
def _quiet(code: float, due: float, time_ms: float, triggered: bool, cleared: bool) -> bool:
    """``detectors._quiet`` for one held condition (code -1: none held, never quiet)."""
    return ((code == 0 and not triggered) or (code == 1 and not cleared and time_ms < due)
            or (code == 2 and not cleared))


@_kernel
def _hedge_waits(state: float, last_hedge: float, delta: np.ndarray, in_flight: np.ndarray, held: np.ndarray,
                 allowed: np.ndarray, index: np.ndarray, time_ms: float, limits: np.ndarray) -> bool:
    """``Ladder.hedge_waits`` for one account (``delta``, ``in_flight`` and ``held`` its rows)."""
    if state >= LIQUIDATING or time_ms - last_hedge < limits[ROUND_MS]:
        return True
    for k in range(len(index)):
        trade = -delta[k] - in_flight[k]
        reduces = held[k] * trade < 0 and abs(trade) <= abs(held[k]) + 1e-12
        if abs(trade) * index[k] >= limits[HEDGE_THRESHOLD] and (allowed[k] != 0 or reduces):
            return False
    return True


@_kernel
def _ladder_fate(state: float, last_round: float, in_flight: float, held: float, ratio: float, ttb: float,
                 maintenance: float, initial: float, time_ms: float, limits: np.ndarray) -> int:
    """UNMOVED where ``Ladder.unmoved`` holds, ROUND where ``Ladder.round_only`` does, DUE_ROUND
    where ``Ladder.round_due`` does, else VISIT."""
    target = 1.0 if initial <= 0 else (maintenance / initial) / limits[BUFFER_FACTOR]
    below_release = ratio < limits[RELEASE_RATIO]
    due = math.isnan(last_round) or time_ms - last_round >= limits[ROUND_MS]
    called = not (below_release and ttb >= limits[HORIZON_MS])
    if ((state == MARGIN_CALL and ratio < limits[REDUCE_RATIO] and called)
            or (state == REDUCE_ONLY and called)
            or (state == LIQUIDATING and not due and not below_release and not ratio < target)
            or (state == LIQUIDATED and not due and not below_release)
            or (state == NORMAL and held != 0 and not ratio >= limits[CALL_RATIO]
                and not ratio >= limits[REDUCE_RATIO] and ttb >= limits[HORIZON_MS])):
        return UNMOVED
    if state == LIQUIDATED and due and not below_release and in_flight != 0:
        return ROUND
    if state == LIQUIDATING and due and not below_release and not ratio < target:
        return DUE_ROUND
    return VISIT


@_kernel
def triage_rows(rows: np.ndarray, ratio: np.ndarray, equity: np.ndarray, maintenance: np.ndarray,
                initial: np.ndarray, delta: np.ndarray, gamma: np.ndarray, codes: np.ndarray, hedges: np.ndarray,
                perpetuals: np.ndarray, underlying: np.ndarray, limits: np.ndarray, time_ms: float,
                ttb: np.ndarray) -> np.ndarray:
    """The fate of each of ``rows`` (the arrays over every account of the book: ``codes`` by
    ``COLUMNS``; ``delta``, ``gamma``, the ``hedges`` in flight and the positions in the
    ``perpetuals`` by underlying) at ``time_ms``; ``underlying``: per underlying its index
    (row 0), whether its trading state lets risk increase (row 1) and its index velocity in
    USD/ms (row 2). Each row's time to breach at that velocity (``revalue.time_to_breach_row``)
    is written to ``ttb`` at its row of the book, and nothing else of ``ttb`` is."""
    out = np.empty(len(rows), dtype=np.int8)
    velocity = underlying[2]
    for j in range(len(rows)):
        r = rows[j]
        x = ratio[r]
        t = ttb[r] = time_to_breach_row(equity, maintenance, delta, gamma, velocity, r)
        if codes[r, WATCHED] == 0 and x < limits[QUIET_BELOW] and t >= limits[HORIZON_MS]:
            out[j] = QUIET
        elif ((codes[r, HEDGED] != 0
               and not _hedge_waits(codes[r, STATE], codes[r, LAST_HEDGE], delta[r], hedges[r], perpetuals[r],
                                    underlying[1], underlying[0], time_ms, limits))
              or not _quiet(codes[r, MARGIN], codes[r, MARGIN_DUE], time_ms, x >= limits[MARGIN_TRIGGER],
                            x < limits[MARGIN_CLEAR])
              or not _quiet(codes[r, LIQUIDATION], codes[r, LIQUIDATION_DUE], time_ms,
                            x >= limits[LIQUIDATION_RATIO], x < limits[MARGIN_TRIGGER])):
            out[j] = VISIT
        else:
            out[j] = _ladder_fate(codes[r, STATE], codes[r, LAST_ROUND], codes[r, IN_FLIGHT], codes[r, HELD], x, t,
                                  maintenance[r], initial[r], time_ms, limits)
    return out


def warm() -> None:
    """Compile (or load from the on-disk cache) ``triage_rows`` for the types the engine passes."""
    one, square = np.ones(1), np.ones((1, 1))
    triage_rows(np.zeros(1, dtype=np.int64), one, one, one, one, square, square, np.zeros((1, len(COLUMNS))), square,
                square, np.ones((3, 1)), np.ones(len(LIMITS)), 0.0, np.ones(1))
