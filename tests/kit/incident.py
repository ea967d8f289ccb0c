"""A small liquidation incident as decoded records: market moves, a breach, actions, fills."""

from __future__ import annotations

from tests.kit.records import OPTION, sample

T0 = 1_798_761_600_000  # 2027-01-01T00:00:00Z
ACCOUNT = "acct-1"


def incident() -> list[tuple[str, str, dict]]:
    """(topic, record, value) in production order."""
    out: list[tuple[str, str, dict]] = []
    for i, price in enumerate((61_000.0, 60_000.0, 58_500.0, 57_000.0)):
        t = T0 + i * 10_000
        out.append(("backstop.market.index", "IndexPrice", sample("IndexPrice", price=price, event_time_ms=t)))
        out.append(("backstop.market.mark", "MarkPrice", sample("MarkPrice", mark_price=0.05 - i * 0.004,
                                                                   index_price=price, event_time_ms=t + 1)))
    # another underlying's index and another account: must not appear in acct-1's timeline
    out.append(("backstop.market.index", "IndexPrice", sample("IndexPrice", underlying="ETH", index_name="eth_usd",
                                                               price=3000.0, event_time_ms=T0 + 5)))
    out.append(("backstop.positions", "PositionUpdate",
                sample("PositionUpdate", account="acct-2", event_time_ms=T0 + 7)))
    out.append(("backstop.positions", "PositionUpdate", sample("PositionUpdate", event_time_ms=T0 - 60_000)))
    out.append(("backstop.collateral", "CollateralUpdate", sample("CollateralUpdate", event_time_ms=T0 - 30_000)))
    out.append(("backstop.breaches", "Breach", sample(
        "Breach", breach_id="b-1", observed=1.05, threshold=1.1, severity="warning", event_time_ms=T0 + 10_001,
        details={"margin_ratio": "1.05"},
        triggers=[{"topic": "backstop.market.index", "partition": 0, "offset": 2, "event_id": None}])))
    out.append(("backstop.breaches", "Breach", sample(
        "Breach", breach_id="b-2", observed=0.92, threshold=1.0, event_time_ms=T0 + 20_001, details={})))
    out.append(("backstop.actions", "Action", sample(
        "Action", action_id="a-1", action_type="partial_liquidation", breach_ids=["b-1", "b-2"],
        event_time_ms=T0 + 20_050)))
    out.append(("backstop.actions", "Action", sample(
        "Action", action_id="a-2", action_type="transfer_to_lp", instrument=OPTION, breach_ids=["b-2"],
        event_time_ms=T0 + 30_010)))
    out.append(("backstop.actions", "Action", sample(
        "Action", action_id="a-3", action_type="auto_deleverage", breach_ids=["b-2"], event_time_ms=T0 + 30_020)))
    out.append(("backstop.executions", "ExecutionReport", sample(
        "ExecutionReport", execution_id="a-1:1", action_id="a-1", status="partially_filled", filled_quantity=6.0,
        avg_price=0.042, fee=0.0002, slippage_bps=20.0, event_time_ms=T0 + 20_250)))
    out.append(("backstop.executions", "ExecutionReport", sample(
        "ExecutionReport", execution_id="a-1:2", action_id="a-1", status="filled", filled_quantity=4.0,
        avg_price=0.043, fee=0.0001, slippage_bps=30.0, event_time_ms=T0 + 20_450)))
    out.append(("backstop.executions", "ExecutionReport", sample(
        "ExecutionReport", execution_id="a-2:1", action_id="a-2", status="filled", venue="lp", counterparty="lp-7",
        filled_quantity=5.0, avg_price=0.035, fee=0.0, slippage_bps=None, event_time_ms=T0 + 31_010)))
    out.append(("backstop.executions", "ExecutionReport", sample(
        "ExecutionReport", execution_id="a-3:1", action_id="a-3", status="filled", venue="adl",
        counterparty="acct-9", filled_quantity=2.0, avg_price=0.034, fee=0.0, slippage_bps=None,
        event_time_ms=T0 + 32_020)))
    out.append(("backstop.executions", "ExecutionReport", sample(
        "ExecutionReport", execution_id="a-3:ins", action_id="a-3", status="filled", venue="insurance_fund",
        counterparty="insurance_fund", filled_quantity=1.0, avg_price=0.034, fee=0.0, slippage_bps=None,
        event_time_ms=T0 + 33_020)))
    out.append(("backstop.deadletters", "DeadLetter", sample("DeadLetter", event_time_ms=T0 + 40_000)))
    return out


EXPECTED = {"inputs": 12, "breaches": 2, "actions": 3, "executions": 5, "dead_letters": 1, "exposures": 0}
