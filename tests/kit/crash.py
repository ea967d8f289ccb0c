"""A scripted crash for engine tests: BTC gaps down ~25 % over ten minutes, IV jumps, the
perpetual's book thins. Four accounts: a 12x long perpetual, short puts, a delta-hedged
desk, and a well-collateralised one."""

from __future__ import annotations

T0 = 1_795_000_000_000  # 2026-11-18T08:53:20Z
PERP = "BTC-PERPETUAL"
PUT = "BTC-27DEC26-55000-P"
CALL = "BTC-27DEC26-65000-C"


def deep_depth(t: int, price: float, size: float) -> dict:
    return {"instrument": PERP, "bids": [{"price": price * (1 - i / 1000), "quantity": size} for i in range(1, 11)],
            "asks": [{"price": price * (1 + i / 1000), "quantity": size} for i in range(1, 11)], "bands": [],
            "sequence": t, "event_time_ms": t}


def crash_events() -> list[tuple[str, dict]]:
    """(record, value) in event-time order."""
    ev: list[tuple[str, dict]] = []
    ev.append(("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": 60_000.0, "event_time_ms": T0}))
    ev.append(("VolatilityUpdate", {"underlying": "BTC", "instrument": None, "iv": 0.55, "smile": [],
                                    "source": "test", "event_time_ms": T0}))
    accounts = {
        "levered-long": (50_000.0, [(PERP, 3.0, 60_000.0)]),
        "short-puts": (120_000.0, [(PUT, -5.0, 2_000.0)]),
        "hedged-desk": (2_000_000.0, [(CALL, -40.0, 3_000.0), (PERP, 15.0, 60_000.0)]),
        "whale-safe": (5_000_000.0, [(PERP, 1.0, 60_000.0)]),
    }
    for n, (account, (collateral, legs)) in enumerate(sorted(accounts.items())):
        t = T0 + 10 + n
        ev.append(("CollateralUpdate", {"account": account, "asset": "USDC", "amount": collateral, "change": collateral,
                                        "reason": "deposit", "sequence": 1, "event_time_ms": t}))
        for k, (instrument, qty, avg) in enumerate(legs):
            ev.append(("PositionUpdate", {"account": account, "instrument": instrument, "quantity": qty,
                                          "average_price": avg, "sequence": k + 1, "event_time_ms": t}))
    # ten minutes of ticks every second: a steady slide, then a gap, IV up, depth down
    price, iv = 60_000.0, 0.55
    for s in range(1, 601):
        t = T0 + s * 1000
        if s < 120:
            price *= 0.9995
        elif s == 120:
            price *= 0.93  # the gap
        elif s < 300:
            price *= 0.999
        ev.append(("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": round(price, 2),
                                  "event_time_ms": t}))
        if s % 10 == 0:
            iv = min(1.2, iv + (0.04 if 110 <= s <= 200 else 0.0))
            ev.append(("VolatilityUpdate", {"underlying": "BTC", "instrument": None, "iv": round(iv, 4), "smile": [],
                                            "source": "test", "event_time_ms": t}))
            size = 20.0 if s < 150 else 0.2
            ev.append(("OrderBookDepth", deep_depth(t, price, size)))
    return ev
