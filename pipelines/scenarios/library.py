"""The named crash scenarios. Magnitudes follow documented incidents (docs/scenarios.md cites
each); durations are compressed to ``duration_s`` of event time so a backtest runs in seconds,
keeping the size of each move and the order of events. Each scenario starts on its incident's
date (``start``, UTC; the hour is nominal: the move is compressed). Each scenario also stages one
failure mode seen in those incidents."""

from __future__ import annotations

import dataclasses
import datetime

from pipelines.errors import UserError
from pipelines.scenarios.model import UnderlyingPath, Window


@dataclasses.dataclass(frozen=True)
class Pump:
    """A thin-book pump of ``underlying``'s perpetual (JELLY, March 2025: a short of $4–6M in public
    reports, then the token +400–500 %; docs/scenarios.md). One actor holds
    ``position_usd`` short in one account, thinly collateralised (margin ratio ``short_ratio``), and
    the same long in another; it buys ``buy_usd`` of the perpetual along the underlying's move, and
    those buys against the thin book lift the mark above the index (``generate.pump_marks``). The
    venue's open interest is published on every mark, with its largest holder's share (the
    actor's short: most of it)."""

    underlying: str
    position_usd: float = 4_000_000.0
    short_ratio: float = 0.9
    buy_usd: float = 4_000_000.0
    max_premium: float = 1.0  # the mark at most this far above the index


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    incident: str  # what happened, with the magnitudes used
    failure_mode: str  # the failure staged on top of the move
    underlyings: tuple[UnderlyingPath, ...]
    start: str  # ISO 8601 UTC: event time of the first tick, on the incident's date (the hour is nominal)
    duration_s: int = 1200
    step_s: int = 1
    depth_usd: float = 4_000_000.0  # one-side depth within 1 % of mid per perpetual, in calm markets
    depth_floor: float = 0.15  # depth at the worst of the move, as a share of calm depth
    vacuum: tuple[Window, ...] = ()  # depth windows: level x calm depth (0 = no bidders)
    oracle: tuple[Window, ...] = ()  # oracle windows: level 0 = stale (no publishes), 1 = stuck price
    withdraw: Window | None = None  # whale withdraws ``level`` of its collateral at ``start``
    pump: Pump | None = None  # a thin-book pump of one underlying's perpetual
    accounts: int = 36
    insurance_fund_usd: float = 10_000.0
    lp_capacity_usd: float = 2_000_000.0
    lp_per_minute_usd: float = 400_000.0
    lp_count: int = 2
    option_depth_share: float = 0.05  # option books: this share of the perpetual's depth, in USD
    seed: int = 7
    # Deribit-style coin margining: option accounts hold their underlying as collateral and its
    # coin-settled (inverse) options, defined on the stream by InstrumentDefinition records
    coin_margined: bool = False

    @property
    def start_ms(self) -> int:
        """``start`` as UTC epoch milliseconds."""
        start = datetime.datetime.fromisoformat(self.start.replace("Z", "+00:00"))
        return int(start.timestamp() * 1000)


BTC, ETH = 60_000.0, 3_000.0

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "black-thursday-2020", "12 March 2020: ETH −50 %, no bidders",
        "ETH fell more than 50 % intraday and BTC about 40 %; Maker auctions cleared at 0-DAI bids during "
        "~40 minutes of congestion; ~6.65M DAI of bad debt.",
        "no bidders for a while: the books are empty for a stretch of the crash (the 2020 keeper outage)",
        (UnderlyingPath("ETH", ETH, -0.50, start=0.15, length=0.45, recovery=0.15, iv=0.7, iv_peak=1.6, jump_rate=0.4,
                        jump_mean=0.015),
         UnderlyingPath("BTC", BTC, -0.40, start=0.15, length=0.45, recovery=0.15, iv=0.6, iv_peak=1.4, jump_rate=0.3,
                        jump_mean=0.012)),
        start="2020-03-12T12:00:00Z",
        vacuum=(Window(0.30, 0.55, 0.0),),
    ),
    Scenario(
        "may-2021", "19 May 2021: BTC −30 % intraday cascade",
        "BTC fell about 30 % intraday (ETH about 40 %) in a cascade of liquidations.",
        "a cascade: depth thins as the fall accelerates, with jumps as liquidations hit the book",
        (UnderlyingPath("BTC", BTC, -0.30, start=0.2, length=0.35, recovery=0.3, iv=0.7, iv_peak=1.3, jump_rate=0.5,
                        jump_mean=0.012),
         UnderlyingPath("ETH", ETH, -0.40, start=0.2, length=0.35, recovery=0.3, iv=0.8, iv_peak=1.5, jump_rate=0.5,
                        jump_mean=0.015)),
        start="2021-05-19T12:00:00Z",
        depth_floor=0.08,
    ),
    Scenario(
        "luna-2022", "May 2022: LUNA collapse, oracle failure",
        "LUNA collapsed over days (compressed here) with oracle and liquidity failure; BTC fell about 20 %.",
        "oracle failure: the oracle goes stale, then sticks at a stale price while the market keeps falling",
        (UnderlyingPath("LUNA", 80.0, -0.90, start=0.1, length=0.6, recovery=0.0, sigma=1.5, iv=1.0, iv_peak=3.0,
                        jump_rate=0.6, jump_mean=0.03, options=False),
         UnderlyingPath("BTC", BTC, -0.20, start=0.1, length=0.6, recovery=0.1, iv=0.6, iv_peak=1.0)),
        start="2022-05-09T12:00:00Z",
        oracle=(Window(0.30, 0.40, 0.0), Window(0.40, 0.55, 1.0)),
        depth_floor=0.05, insurance_fund_usd=2_000.0,
    ),
    Scenario(
        "ftx-2022", "6–11 November 2022: FTX, liquidity vacuum forcing ADL",
        "BTC ~$21k → $15.6k (−26 %); FTT $25.77 → $2.68 (−90 %), most of it in one gap: on 8 November FTT lost "
        "about three quarters of its value within hours (here −74 % in one tick, then the slide to −90 %).",
        "a liquidity vacuum that forces ADL: FTT gaps through its longs' bankruptcy, books vanish, backstop LPs "
        "and the insurance fund are small",
        (UnderlyingPath("BTC", 21_000.0, -0.26, start=0.15, length=0.5, recovery=0.05, iv=0.6, iv_peak=1.2),
         # trend −60 % and a gap of log −1.35 (−74 %) at 0.2: together $25.77 → $2.67
         UnderlyingPath("FTT", 25.77, -0.6, start=0.15, length=0.5, recovery=0.0, sigma=1.5, jumps=((0.2, -1.35),),
                        iv=1.0, iv_peak=3.0, jump_rate=0.5, jump_mean=0.04, options=False)),
        start="2022-11-08T12:00:00Z",
        vacuum=(Window(0.35, 0.7, 0.02),),
        insurance_fund_usd=5_000.0, lp_capacity_usd=300_000.0, lp_per_minute_usd=100_000.0,
    ),
    Scenario(
        "aug-2024", "5 August 2024: yen carry unwind",
        "BTC $58,350 → $49,513 (−15 %) in under 5 hours; ETH $2,695 → $2,118 (−21 %).",
        "withdraw-then-liquidate (Hyperliquid ETH, March 2025): a whale pulls collateral just before the fall",
        (UnderlyingPath("BTC", 58_350.0, -0.152, start=0.25, length=0.4, recovery=0.3, iv=0.5, iv_peak=1.0),
         UnderlyingPath("ETH", 2_695.0, -0.214, start=0.25, length=0.4, recovery=0.3, iv=0.6, iv_peak=1.2,
                        jump_rate=0.4, jump_mean=0.01)),
        start="2024-08-05T12:00:00Z",
        withdraw=Window(0.2, 0.2, 0.6), insurance_fund_usd=5_000.0,
    ),
    Scenario(
        "jelly-2025", "March 2025: JELLY thin-book pump (Mango, October 2022)",
        "JELLY +400 % on a thin book against the backstop vault; Mango: MNGO $0.038 → $0.54–0.91 in under 10 minutes.",
        "a thin-book pump: one actor's $4M short and long make most of the open interest; its buys lift the "
        "perpetual's mark above the index on a book of a few hundred thousand dollars and squeeze the shorts",
        (UnderlyingPath("JELLY", 0.05, 4.0, start=0.2, length=0.3, recovery=0.5, sigma=2.0, iv=1.2, iv_peak=4.0,
                        jump_rate=0.6, jump_mean=0.05, options=False),
         UnderlyingPath("BTC", BTC, -0.03, start=0.2, length=0.3, recovery=0.5, iv=0.5, iv_peak=0.6)),
        start="2025-03-26T12:00:00Z",
        depth_usd=1_500_000.0, depth_floor=0.1, pump=Pump("JELLY"),
    ),
    Scenario(
        "october-2025", "10–11 October 2025: $19B liquidated, cross-margin ADL",
        "About $19B liquidated across venues in 24 hours; the first cross-margin ADL on Hyperliquid. Sizes here: "
        "BTC −15 %, ETH −20 % in minutes, then a liquidity vacuum.",
        "a liquidity vacuum that forces ADL: the books go near-empty while liquidations queue",
        (UnderlyingPath("BTC", BTC, -0.15, start=0.2, length=0.2, recovery=0.4, iv=0.5, iv_peak=1.1, jump_rate=0.6,
                        jump_mean=0.01),
         UnderlyingPath("ETH", ETH, -0.20, start=0.2, length=0.2, recovery=0.4, iv=0.6, iv_peak=1.3, jump_rate=0.6,
                        jump_mean=0.012)),
        start="2025-10-10T12:00:00Z",
        vacuum=(Window(0.3, 0.6, 0.01),),
        insurance_fund_usd=5_000.0, lp_capacity_usd=500_000.0, lp_per_minute_usd=150_000.0,
    ),
    Scenario(
        "deribit-coin-2021", "19 May 2021 on a coin-margined book: BTC collateral, BTC-settled options",
        "BTC fell about 30 % intraday (see may-2021), here against a Deribit-style book: option accounts post "
        "BTC as collateral and hold BTC-settled (inverse) options, premiums in BTC.",
        "wrong-way collateral: a short put's loss grows as the BTC backing it loses value",
        (UnderlyingPath("BTC", BTC, -0.30, start=0.2, length=0.35, recovery=0.3, iv=0.7, iv_peak=1.3, jump_rate=0.5,
                        jump_mean=0.012),),
        start="2021-05-19T12:00:00Z",
        depth_floor=0.08, coin_margined=True,
    ),
)

DEFAULT = "black-thursday-2020"


def names() -> list[str]:
    return [s.name for s in SCENARIOS]


def get(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise UserError(f"unknown scenario {name!r}; `backstop scenarios list` shows them: {', '.join(names())}")
