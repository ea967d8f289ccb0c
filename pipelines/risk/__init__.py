"""Greek-aware risk core: pricing, exposure, scenario portfolio margin, adaptive thresholds and
liquidation ordering. Pure, deterministic and vectorised: no I/O and no wall clock (the market
time is always passed in, as epoch milliseconds UTC). The CLI in ``whatif`` is the only module
here that reads files.

The batch entry point for the stream workers is :func:`pipelines.risk.book.revalue_book`; the
single-account :func:`pipelines.risk.book.account_risk` is a thin wrapper over it.
"""
