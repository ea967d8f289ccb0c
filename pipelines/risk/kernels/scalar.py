"""Scalar helpers the kernels share, each the exact counterpart of a numpy operation."""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, error_model="numpy")
def maximum(a: float, b: float) -> float:
    """``np.maximum``: NaN if either is NaN, the second operand on a tie (so max(0.0, -0.0) is -0.0)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a > b else b


@njit(cache=True, error_model="numpy")
def minimum(a: float, b: float) -> float:
    """``np.minimum``: NaN if either is NaN, the second operand on a tie."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a < b else b
