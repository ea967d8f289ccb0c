"""The worker's event-loop probe: a loop held by synchronous work (engine, snapshot) is seen, and
counted in the metric an operator alerts on before the group drops the worker."""

from __future__ import annotations

import asyncio
import time

from pipelines.ops.metrics import Metrics
from pipelines.streams.app import watch_loop


def test_a_held_loop_is_measured_and_counted() -> None:
    metrics = Metrics("worker")
    readings: list[float] = []

    def observe(seconds: float) -> None:
        readings.append(seconds)
        metrics.loop_lag(seconds)

    async def main() -> None:
        probe = asyncio.create_task(watch_loop(observe, interval_s=0.05))
        await asyncio.sleep(0.12)  # the probe wakes on time, twice
        time.sleep(0.4)  # what a long engine step does to everything else on the loop
        await asyncio.sleep(0.12)
        probe.cancel()

    asyncio.run(main())
    assert max(readings) >= 0.3  # the sleep due during the hold ended that much late
    assert min(readings) < 0.25  # the ones before it were on time: the probe measures, it does not add
    registry = metrics.registry
    assert registry.get_sample_value("backstop_event_loop_lag_seconds_count") == len(readings)
    on_time = registry.get_sample_value("backstop_event_loop_lag_seconds_bucket", {"le": "0.25"})
    assert on_time == sum(r <= 0.25 for r in readings) < len(readings)
