"""Execution: the venue adapter, the simulated venue, the liquidation waterfall and the executors."""
