"""The liquidation waterfall: book, then backstop liquidity providers, then the insurance fund,
then auto-deleveraging — each step a fill, and the fills add up to the position.

Pure and deterministic: time is simulated (``start_ms`` plus one ``clip_interval_ms`` per
clip), the book, the LP pool and the fund are passed in and changed in place.

1. **Book, in clips.** Each clip takes at most ``clip_fraction`` of the depth available inside
   the slippage cap (``max_slippage`` from mark), so no clip moves the price past the cap; depth
   comes back between clips (``replenish_per_clip``). The thinner the book, the smaller the
   clips and the more of them: the window stretches, up to ``max_clips`` (a time budget —
   Drift reaches 100 % liquidatable in about a minute, Deribit works in ~1 s rounds).
2. **Backstop liquidity providers** take what the book could not, pro rata to their live
   capacity: the least of their remaining capacity and what their per-minute absorption limit
   still allows (FTX's BLP programme: $0.1M per minute), at their discount to mark.
3. **Insurance fund.** The rest is closed at the account's bankruptcy price — the price that
   leaves its equity at exactly zero after the fills so far. The fund takes it over as far as it
   can bear the loss against mark; when every unit is already closed and the fills went beyond
   bankruptcy, the fund covers that deficit instead.
4. **Auto-deleveraging.** What the fund cannot bear is closed at the same bankruptcy price
   against opposing positions ranked by unrealised profit x leverage (dYdX, Hyperliquid), so the
   book takes no loss; a deficit left with nothing to close is reported as bad debt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pipelines.execution.book import BUY, SELL, OrderBook

MINUTE_MS = 60_000


@dataclasses.dataclass(frozen=True)
class WaterfallParams:
    max_slippage: float = 0.02
    clip_fraction: float = 0.2
    clip_interval_ms: int = 1_000
    replenish_per_clip: float = 0.3
    max_clips: int = 60
    taker_fee: float = 0.0005


@dataclasses.dataclass(frozen=True)
class LiquidityProvider:
    """A registered backstop LP: capacity and per-minute limit in USD notional, the instruments
    it takes (``"*"`` for all) and its discount to mark."""

    lp_id: str
    capacity_usd: float
    per_minute_usd: float
    discount: float
    instruments: frozenset[str] = frozenset({"*"})

    def takes(self, instrument: str) -> bool:
        return "*" in self.instruments or instrument in self.instruments


class LiquidityPool:
    """The LPs with their live usage: total absorbed, and absorptions within the last minute."""

    def __init__(self, providers: Sequence[LiquidityProvider]) -> None:
        self.providers = list(providers)
        self.absorbed_usd = {lp.lp_id: 0.0 for lp in providers}
        self._recent: dict[str, list[tuple[int, float]]] = {lp.lp_id: [] for lp in providers}

    def live_capacity(self, lp: LiquidityProvider, now_ms: int) -> float:
        recent = [(t, usd) for t, usd in self._recent[lp.lp_id] if t > now_ms - MINUTE_MS]
        self._recent[lp.lp_id] = recent
        minute_left = lp.per_minute_usd - sum(usd for _, usd in recent)
        return max(0.0, min(lp.capacity_usd - self.absorbed_usd[lp.lp_id], minute_left))

    def record(self, lp: LiquidityProvider, now_ms: int, usd: float) -> None:
        self.absorbed_usd[lp.lp_id] += usd
        self._recent[lp.lp_id].append((now_ms, usd))


@dataclasses.dataclass
class InsuranceFund:
    balance_usd: float
    drawn_usd: float = 0.0

    def draw(self, wanted_usd: float) -> float:
        """Pay out up to ``wanted_usd``; return what was paid."""
        paid = min(max(wanted_usd, 0.0), self.balance_usd)
        self.balance_usd -= paid
        self.drawn_usd += paid
        return paid

    def credit(self, usd: float) -> None:
        self.balance_usd += usd


@dataclasses.dataclass(frozen=True)
class AdlCandidate:
    """An open position in the same instrument, a possible ADL counterparty."""

    account: str
    quantity: float
    avg_price: float
    equity_usd: float

    def score(self, mark: float) -> float:
        """Unrealised profit x leverage; only profitable positions are eligible (score > 0)."""
        pnl = (mark - self.avg_price) * self.quantity
        if pnl <= 0 or self.equity_usd <= 0:
            return 0.0
        return pnl * abs(self.quantity) * mark / self.equity_usd


@dataclasses.dataclass(frozen=True)
class Fill:
    step: str  # book | lp | insurance_fund | adl
    counterparty: str
    quantity: float
    price: float
    fee_usd: float
    slippage_bps: float
    event_time_ms: int


@dataclasses.dataclass(frozen=True)
class WaterfallResult:
    account: str
    instrument: str
    side: str
    quantity: float
    fills: tuple[Fill, ...]
    final_equity_usd: float
    fund_draw_usd: float
    bad_debt_usd: float
    finished_ms: int
    unfilled: float = 0.0  # left open with the account (partial rounds only)

    def quantity_by_step(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for fill in self.fills:
            out[fill.step] = out.get(fill.step, 0.0) + fill.quantity
        return out


@dataclasses.dataclass
class _Closing:
    """A liquidation in progress: what is left to close, the account's equity at ``mark`` after
    the fills so far, the fills, and the simulated time. ``sign`` is +1 when a long is sold."""

    mark: float
    sign: float
    remaining: float
    equity: float
    now: int
    fills: list[Fill] = dataclasses.field(default_factory=list)

    def slip(self, price: float) -> float:
        """Slippage of ``price`` against the mark, in basis points, positive when worse."""
        return (self.mark - price) / self.mark * 1e4 * self.sign


def liquidate(account: str, instrument: str, position: float, mark: float, equity_usd: float, book: OrderBook,
              pool: LiquidityPool, fund: InsuranceFund, adl_candidates: Sequence[AdlCandidate],
              start_ms: int, params: WaterfallParams | None = None, close_all: bool = True) -> WaterfallResult:
    """Close ``position`` (signed contracts; one contract = one unit of the underlying, USD-linear)
    of an account whose equity at ``mark`` is ``equity_usd``.

    ``close_all=False`` (a partial liquidation or an LP transfer): while the account is still
    solvent after the book and the LPs, what they could not take stays open with the account
    (``unfilled``) for the next round; the fund and ADL only take over from a bankrupt account."""
    p = params or WaterfallParams()
    side = SELL if position > 0 else BUY
    run = _Closing(mark, 1.0 if position > 0 else -1.0, abs(position), equity_usd, start_ms)
    _close_on_book(run, book, side, p)
    if run.remaining > 1e-12:
        _close_with_providers(run, pool, instrument)
    if not close_all and run.equity > 0:
        return WaterfallResult(account, instrument, side, abs(position), tuple(run.fills), run.equity, 0.0, 0.0,
                               run.now, unfilled=max(run.remaining, 0.0))
    fund_draw, bad_debt = _close_at_bankruptcy(run, fund, adl_candidates)
    return WaterfallResult(account, instrument, side, abs(position), tuple(run.fills), run.equity, fund_draw, bad_debt,
                           run.now)


def _close_on_book(run: _Closing, book: OrderBook, side: str, p: WaterfallParams) -> None:
    """Step 1: the book, in clips inside the slippage cap, depth replenished between clips."""
    limit = run.mark * (1 - p.max_slippage * run.sign)
    for _ in range(p.max_clips):
        if run.remaining <= 1e-12:
            break
        available = book.available(side, limit)
        if available <= 1e-12:
            break
        sweep = book.sweep(side, min(run.remaining, available * p.clip_fraction), limit)
        if sweep.filled > 0:
            fee = sweep.notional * p.taker_fee
            run.equity += (sweep.avg_price - run.mark) * sweep.filled * run.sign - fee
            run.remaining -= sweep.filled
            run.fills.append(Fill("book", "book", sweep.filled, sweep.avg_price, fee, run.slip(sweep.avg_price),
                                  run.now))
        run.now += p.clip_interval_ms
        book.replenish(p.replenish_per_clip)


def _close_with_providers(run: _Closing, pool: LiquidityPool, instrument: str) -> None:
    """Step 2: the backstop liquidity providers, pro rata to their live capacity, at their discount."""
    eligible = [(lp, pool.live_capacity(lp, run.now)) for lp in pool.providers if lp.takes(instrument)]
    eligible = [(lp, cap) for lp, cap in eligible if cap > 0]
    total = sum(cap for _, cap in eligible)
    wanted_usd = run.remaining * run.mark
    for lp, cap in eligible:
        usd = cap if total <= wanted_usd else wanted_usd * cap / total
        qty = min(run.remaining, usd / run.mark)
        if qty <= 1e-12:
            continue
        price = run.mark * (1 - lp.discount * run.sign)
        run.equity += (price - run.mark) * qty * run.sign
        run.remaining -= qty
        pool.record(lp, run.now, qty * run.mark)
        run.fills.append(Fill("lp", lp.lp_id, qty, price, 0.0, run.slip(price), run.now))


def _close_at_bankruptcy(run: _Closing, fund: InsuranceFund, adl_candidates: Sequence[AdlCandidate]
                         ) -> tuple[float, float]:
    """Steps 3 and 4: the rest at the bankruptcy price, the fund as far as it can bear the loss,
    then ADL; with nothing left to close, the fund covers a deficit. Leaves the equity at 0
    (unless it was positive with nothing left) and returns (fund draw, bad debt) in USD."""
    if run.remaining <= 1e-12:
        if run.equity >= 0:
            return 0.0, 0.0
        fund_draw = fund.draw(-run.equity)
        bad_debt = -run.equity - fund_draw
        run.equity = 0.0
        return fund_draw, bad_debt
    bankruptcy = run.mark - run.sign * run.equity / run.remaining
    loss_vs_mark = max(0.0, -run.equity)
    fund_share = 1.0 if loss_vs_mark == 0 else min(1.0, fund.balance_usd / loss_vs_mark)
    fund_draw = fund.draw(loss_vs_mark * fund_share)
    fund_qty = run.remaining * fund_share
    if fund_qty > 1e-12:
        run.fills.append(Fill("insurance_fund", "insurance_fund", fund_qty, bankruptcy, 0.0, run.slip(bankruptcy),
                              run.now))
    if run.equity > 0:
        fund.credit(run.equity)  # the fund takes over at bankruptcy: what is left of the equity is its fee
    unfunded_qty = run.remaining - fund_qty
    adl_qty = _deleverage(run, adl_candidates, unfunded_qty, bankruptcy)
    bad_debt = 0.0
    if adl_qty > 1e-12:
        # nobody left to deleverage against: the fund is left holding the rest, and the loss
        # on it that the fund could not pay is bad debt
        run.fills.append(Fill("insurance_fund", "insurance_fund", adl_qty, bankruptcy, 0.0, run.slip(bankruptcy),
                              run.now))
        bad_debt = (loss_vs_mark - fund_draw) * adl_qty / unfunded_qty
    run.equity = 0.0
    return fund_draw, bad_debt


def _deleverage(run: _Closing, candidates: Sequence[AdlCandidate], quantity: float, bankruptcy: float) -> float:
    """Close up to ``quantity`` at ``bankruptcy`` against the opposing profitable positions, best
    score (profit x leverage) first, ties by account; return what is left."""
    eligible = (c for c in candidates if c.quantity * run.sign < 0 and c.score(run.mark) > 0)
    for candidate in sorted(eligible, key=lambda c: (-c.score(run.mark), c.account)):
        if quantity <= 1e-12:
            break
        qty = min(quantity, abs(candidate.quantity))
        run.fills.append(Fill("adl", candidate.account, qty, bankruptcy, 0.0, run.slip(bankruptcy), run.now))
        quantity -= qty
    return quantity
