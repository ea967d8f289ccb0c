"""Backtests: the same scenario with and without the backstop, sweeps and the frontier plot."""
