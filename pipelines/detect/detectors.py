"""Breach detectors on event time, one state machine per key, with hysteresis.

Each ``on_*`` method takes one observation (already decoded and validated by the shell), with
its event time and an opaque reference to the event that carried it, and returns the breaches
it caused. A late observation (older than the key's watermark allows) changes nothing and is
counted in ``late_events``. Given the same observations in the same per-key order, the output
is the same: that is what makes a Kafka run and an in-process replay agree.

Default thresholds and their sources are in ``DetectorParams``.

The state is data in two parts: each account's (``account_state``), and the market's — every
key that is not an account's (``market_state``). Restoring the market part and any set of
accounts gives detectors that behave on those accounts as the ones the parts came from.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable
from statistics import median
from typing import Any

import numpy as np

from pipelines.detect.breach import Breach, BreachKind
from pipelines.detect.windows import HeldCondition, RollingExtremes, RollingTwap, Sample, Watermark
from pipelines.errors import UserError

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
ACCOUNT_STREAMS = ("collateral", "margin")  # the watermark streams keyed by account


@dataclasses.dataclass(frozen=True)
class DetectorParams:
    """Thresholds and windows. Defaults, with where they come from:

    - margin: liquidatable at margin ratio (MM / equity) >= 1 (Deribit, Paradex); a breach must
      hold ``margin_grace_ms`` so one stale tick does not liquidate (Deribit liquidates in
      rounds of about a second); it clears below 0.95 so it does not flap.
    - equity below liquidation: ratio >= 1.5, i.e. equity under 2/3 of MM, where Hyperliquid's
      liquidator vault takes an account over; immediate.
    - index move: circuit-breaker levels 7 / 13 / 20 % (CME equity-futures limit levels) within
      one hour of event time. ``index_move_levels`` is strictly ascending, each finite and above
      0 (a ``UserError`` naming the field otherwise); an empty tuple turns the detector off.
    - IV jump: 10 vol points within 5 minutes.
    - liquidity: depth within the price band under $250k for 30 s; clears at 1.5x.
    - oracle: stale after 60 s without a publish; sources more than 2 % apart; more than 10 %
      off the oracle's own 5-minute TWAP (Drift blocks liquidations at 50 % off its 5-minute
      TWAP; a backstop should be stricter).
    - withdraw-then-liquidate: a withdrawal of 10 %+ of equity within 15 minutes before a margin
      breach (the March 2025 Hyperliquid ETH pattern).
    - mark manipulation: a mark 25 %+ off its index while it backs open positions (Mango,
      October 2022: MNGO x14 in 10 minutes; JELLY, March 2025: +400 %); or a thin-book pump: the
      mark 2 %+ off its index after a move of 30 %+ from its own extreme of the last 10 minutes
      (Mango's pump took under 10), while the venue's open interest is 5x or more the instrument's
      book depth within 1 % of mid (a book that cannot absorb its open interest) and one holder
      has half of it or more (JELLY: a $4-6M short, then the token +400 %). A crash that takes
      mark and index down together is none. The pump rule needs a published open interest, a
      depth and a published largest holder's share (``MarkPrice.largest_holder_share``).
    - rolling windows (index move, IV jump, oracle TWAP) start on whole buckets of
      ``window_buckets`` per window length: the index-move hour advances in 10 s steps, the
      5-minute windows in steps of 833 ms. That bounds a window's memory — and so a worker's
      snapshot — whatever the tick rate (``pipelines/detect/windows.py``).
    """

    allowed_lateness_ms: int = 5 * SECOND_MS
    margin_trigger_ratio: float = 1.0
    margin_clear_ratio: float = 0.95
    margin_grace_ms: int = 3 * SECOND_MS
    liquidation_ratio: float = 1.5
    index_move_levels: tuple[float, ...] = (0.07, 0.13, 0.20)
    index_move_window_ms: int = 60 * MINUTE_MS
    index_move_clear_fraction: float = 0.5
    iv_jump_points: float = 0.10
    iv_jump_window_ms: int = 5 * MINUTE_MS
    depth_min_usd: float = 250_000.0
    depth_clear_multiple: float = 1.5
    depth_hold_ms: int = 30 * SECOND_MS
    oracle_stale_ms: int = 60 * SECOND_MS
    oracle_max_deviation: float = 0.02
    oracle_twap_window_ms: int = 5 * MINUTE_MS
    oracle_max_twap_deviation: float = 0.10
    withdrawal_min_fraction: float = 0.10
    withdrawal_lookback_ms: int = 15 * MINUTE_MS
    mark_max_deviation: float = 0.25
    pump_window_ms: int = 10 * MINUTE_MS
    pump_min_move: float = 0.30
    pump_interest_depth_multiple: float = 5.0
    pump_min_premium: float = 0.02
    pump_min_concentration: float = 0.5
    window_buckets: int = 360

    def __post_init__(self) -> None:
        levels = self.index_move_levels
        if not all(math.isfinite(level) and level > 0 for level in levels) \
                or any(low >= high for low, high in zip(levels, levels[1:])):
            raise UserError(f"detector parameter index_move_levels: expected finite fractions above 0 in "
                            f"strictly ascending order, got {levels!r}")


@dataclasses.dataclass
class _AccountState:
    margin: HeldCondition
    liquidation: HeldCondition
    withdrawals: list[tuple[int, float, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _LevelState:
    level: int = 0


class Detectors:
    """All detectors of one worker, keyed by account, underlying, instrument or oracle source."""

    def __init__(self, params: DetectorParams | None = None) -> None:
        self.params = params or DetectorParams()
        self.late_events = 0
        self._watermarks: dict[str, Watermark] = {}
        self._accounts: dict[str, _AccountState] = {}
        self._index_windows: dict[str, RollingExtremes] = {}
        self._index_levels: dict[str, _LevelState] = defaultdict(_LevelState)
        # underlying -> its index watermark, window and level state (the entries above; derived, not state)
        self._index_feeds: dict[str, tuple[Watermark, RollingExtremes, _LevelState]] = {}
        self._iv_windows: dict[str, RollingExtremes] = {}
        self._iv_firing: set[str] = set()
        self._depth: dict[str, HeldCondition] = {}
        self._oracle_last: dict[str, dict[str, tuple[int, float, str]]] = defaultdict(dict)
        self._oracle_twap: dict[str, RollingTwap] = {}
        self._oracle_stale: set[tuple[str, str]] = set()
        self._oracle_deviating: set[str] = set()
        self._oracle_off_twap: set[str] = set()
        self._mark_windows: dict[str, RollingExtremes] = {}
        self._mark_firing: dict[str, float] = {}  # instrument -> its price before the manipulation
        self._pumped: set[str] = set()  # the instruments of _mark_firing that fired as a pump
        self._delisted: set[str] = set()  # instruments delisted after a pump: judged no more

    # ------------------------------------------------------------------ helpers

    def _admit(self, stream: str, key: str, event_time_ms: int) -> bool:
        watermark = self._watermarks.get(f"{stream}/{key}")
        if watermark is None:
            watermark = self._watermarks[f"{stream}/{key}"] = Watermark(self.params.allowed_lateness_ms)
        if watermark.admit(event_time_ms):
            return True
        self.late_events += 1
        return False

    def _account(self, account: str) -> _AccountState:
        state = self._accounts.get(account)
        if state is None:
            state = self._accounts[account] = _AccountState(
                margin=HeldCondition(self.params.margin_grace_ms), liquidation=HeldCondition(0))
        return state

    # ------------------------------------------------------------------ accounts

    def on_collateral(self, account: str, event_time_ms: int, change_usd: float, equity_usd: float,
                      ref: str) -> list[Breach]:
        """A collateral change; withdrawals large against equity are remembered for a while."""
        if not self._admit("collateral", account, event_time_ms):
            return []
        state = self._account(account)
        if change_usd < 0 and -change_usd >= self.params.withdrawal_min_fraction * max(equity_usd - change_usd, 0.0):
            state.withdrawals.append((event_time_ms, -change_usd, ref))
        horizon = event_time_ms - self.params.withdrawal_lookback_ms
        state.withdrawals = [w for w in state.withdrawals if w[0] >= horizon]
        return []

    def on_margin(self, account: str, event_time_ms: int, margin_ratio: float, ref: str) -> list[Breach]:
        """A revaluation of an account: margin ratio = maintenance margin / equity (inf if equity <= 0)."""
        if not self._admit("margin", account, event_time_ms):
            return []
        p = self.params
        state = self._account(account)
        out: list[Breach] = []
        margin = state.margin.update(event_time_ms, margin_ratio >= p.margin_trigger_ratio,
                                     margin_ratio < p.margin_clear_ratio)
        if margin:
            since = state.margin.pending_since_ms if margin == "fire" else event_time_ms
            out.append(Breach(BreachKind.MARGIN_SHORTFALL, account, event_time_ms, margin_ratio,
                              p.margin_trigger_ratio, since if since is not None else event_time_ms, event_time_ms,
                              (ref,), cleared=margin == "clear"))
        liquidation = state.liquidation.update(event_time_ms, margin_ratio >= p.liquidation_ratio,
                                               margin_ratio < p.margin_trigger_ratio)
        if liquidation:
            out.append(Breach(BreachKind.EQUITY_BELOW_LIQUIDATION, account, event_time_ms, margin_ratio,
                              p.liquidation_ratio, event_time_ms, event_time_ms, (ref,),
                              cleared=liquidation == "clear"))
        fired = any(not b.cleared for b in out)
        recent = [w for w in state.withdrawals if w[0] >= event_time_ms - p.withdrawal_lookback_ms]
        if fired and recent:
            first = recent[0]
            out.append(Breach(BreachKind.WITHDRAW_THEN_BREACH, account, event_time_ms, sum(w[1] for w in recent),
                              p.withdrawal_min_fraction, first[0], event_time_ms,
                              tuple(w[2] for w in recent) + (ref,)))
            state.withdrawals.clear()
        return out

    # ------------------------------------------------------------------ market

    def on_index(self, underlying: str, event_time_ms: int, price: float, ref: str) -> list[Breach]:
        """An index price: moves against the window's extremes, reported per circuit-breaker level,
        and the oracles of ``underlying`` checked for staleness."""
        feed = self._index_feeds.get(underlying)
        if feed is None:
            if not self._admit("index", underlying, event_time_ms):
                return []
            feed = self._index_feed(underlying)
        elif not feed[0].admit(event_time_ms):
            self.late_events += 1
            return []
        _, window, state = feed
        p = self.params
        window.add(Sample(event_time_ms, price, ref))
        high, low = window.extremes(event_time_ms)
        down, up = 1.0 - price / high.value, price / low.value - 1.0
        move, anchor = (down, high) if down >= up else (up, low)
        levels = p.index_move_levels
        if not state.level and (not levels or move < levels[0]):  # no level reached, none held
            return self._check_stale(underlying, event_time_ms, ref) if underlying in self._oracle_last else []
        level = 0  # how many levels the move reaches (a loop: a generator cost more than the rest of the check)
        for threshold in p.index_move_levels:
            if move >= threshold:
                level += 1
        out: list[Breach] = []
        if level > state.level:
            state.level = level
            signed = -down if anchor is high else up
            out.append(Breach(BreachKind.INDEX_MOVE, underlying, event_time_ms, signed, p.index_move_levels[level - 1],
                              anchor.event_time_ms, event_time_ms, (anchor.ref, ref), level=level))
        elif state.level and move < p.index_move_levels[0] * p.index_move_clear_fraction:
            state.level = 0
            out.append(Breach(BreachKind.INDEX_MOVE, underlying, event_time_ms, move, p.index_move_levels[0],
                              window.start_ms(event_time_ms), event_time_ms, (ref,), cleared=True))
        out.extend(self._check_stale(underlying, event_time_ms, ref))
        return out

    def _index_feed(self, underlying: str) -> tuple[Watermark, RollingExtremes, _LevelState]:
        """``underlying``'s index watermark (which must exist), window and level state, the window
        and the state made if new; kept in ``_index_feeds``."""
        p = self.params
        window = self._index_windows.get(underlying)
        if window is None:
            window = self._index_windows[underlying] = RollingExtremes(p.index_move_window_ms, p.allowed_lateness_ms,
                                                                       p.window_buckets)
        feed = self._index_feeds[underlying] = (self._watermarks[f"index/{underlying}"], window,
                                                self._index_levels[underlying])
        return feed

    def on_iv(self, key: str, event_time_ms: int, iv: float, ref: str) -> list[Breach]:
        """An implied vol (per instrument, or an underlying's ATM): a rise of Y points within the window."""
        if not self._admit("iv", key, event_time_ms):
            return []
        p = self.params
        window = self._iv_windows.get(key)
        if window is None:
            window = self._iv_windows[key] = RollingExtremes(p.iv_jump_window_ms, p.allowed_lateness_ms,
                                                             p.window_buckets)
        window.add(Sample(event_time_ms, iv, ref))
        low = window.extremes(event_time_ms)[1]
        jump = iv - low.value
        if key not in self._iv_firing and jump >= p.iv_jump_points:
            self._iv_firing.add(key)
            return [Breach(BreachKind.IV_JUMP, key, event_time_ms, jump, p.iv_jump_points, low.event_time_ms,
                           event_time_ms, (low.ref, ref))]
        if key in self._iv_firing and jump < p.iv_jump_points / 2:
            self._iv_firing.discard(key)
            return [Breach(BreachKind.IV_JUMP, key, event_time_ms, jump, p.iv_jump_points, low.event_time_ms,
                           event_time_ms, (ref,), cleared=True)]
        return []

    def on_depth(self, instrument: str, event_time_ms: int, depth_usd: float, ref: str) -> list[Breach]:
        """Order-book depth within the price band: too thin for long enough is liquidity stress."""
        if not self._admit("depth", instrument, event_time_ms):
            return []
        p = self.params
        held = self._depth.get(instrument)
        if held is None:
            held = self._depth[instrument] = HeldCondition(p.depth_hold_ms)
        since = held.pending_since_ms
        change = held.update(event_time_ms, depth_usd < p.depth_min_usd,
                             depth_usd >= p.depth_min_usd * p.depth_clear_multiple)
        if change is None:
            return []
        start = held.pending_since_ms if change == "fire" else (since or event_time_ms)
        return [Breach(BreachKind.LIQUIDITY_DROP, instrument, event_time_ms, depth_usd, p.depth_min_usd,
                       start if start is not None else event_time_ms, event_time_ms, (ref,),
                       cleared=change == "clear")]

    def on_oracle(self, underlying: str, source: str, event_time_ms: int, publish_time_ms: int, price: float,
                  ref: str) -> list[Breach]:
        """An oracle price: stale sources, sources disagreeing, and a price far off its own TWAP."""
        if not self._admit(f"oracle/{source}", underlying, event_time_ms):
            return []
        p = self.params
        out: list[Breach] = []
        sources = self._oracle_last[underlying]
        sources[source] = (publish_time_ms, price, ref)
        if (underlying, source) in self._oracle_stale and event_time_ms - publish_time_ms <= p.oracle_stale_ms:
            self._oracle_stale.discard((underlying, source))
            out.append(Breach(BreachKind.ORACLE_STALE, f"{underlying}/{source}", event_time_ms,
                              (event_time_ms - publish_time_ms) / SECOND_MS, p.oracle_stale_ms / SECOND_MS,
                              publish_time_ms, event_time_ms, (ref,), cleared=True))
        out.extend(self._check_stale(underlying, event_time_ms, ref))
        fresh = sources if len(sources) < 2 else {  # one source never disagrees
            s: v for s, v in sources.items() if event_time_ms - v[0] <= p.oracle_stale_ms}
        if len(fresh) >= 2:
            prices = [v[1] for v in fresh.values()]
            mid = median(prices)
            spread = (max(prices) - min(prices)) / mid
            refs = tuple(v[2] for _, v in sorted(fresh.items()))
            if underlying not in self._oracle_deviating and spread >= p.oracle_max_deviation:
                self._oracle_deviating.add(underlying)
                out.append(Breach(BreachKind.ORACLE_DEVIATION, underlying, event_time_ms, spread,
                                  p.oracle_max_deviation, min(v[0] for v in fresh.values()), event_time_ms, refs))
            elif underlying in self._oracle_deviating and spread < p.oracle_max_deviation / 2:
                self._oracle_deviating.discard(underlying)
                out.append(Breach(BreachKind.ORACLE_DEVIATION, underlying, event_time_ms, spread,
                                  p.oracle_max_deviation, event_time_ms, event_time_ms, refs, cleared=True))
        out.extend(self._check_twap(underlying, event_time_ms, price, ref))
        return out

    def _check_twap(self, underlying: str, event_time_ms: int, price: float, ref: str) -> list[Breach]:
        p = self.params
        window = self._oracle_twap.get(underlying)
        if window is None:
            window = self._oracle_twap[underlying] = RollingTwap(p.oracle_twap_window_ms, p.allowed_lateness_ms,
                                                                 p.window_buckets)
        if not window.add(Sample(event_time_ms, price, ref)):
            # one window for every source of the underlying, the watermark per source: a source
            # far behind the others is late for the TWAP
            self.late_events += 1
            return []
        twap = window.average(event_time_ms)
        off = abs(price / twap - 1.0)
        subject = f"{underlying}/twap"
        if underlying not in self._oracle_off_twap and off >= p.oracle_max_twap_deviation:
            self._oracle_off_twap.add(underlying)
            return [Breach(BreachKind.ORACLE_DEVIATION, subject, event_time_ms, off, p.oracle_max_twap_deviation,
                           event_time_ms - p.oracle_twap_window_ms, event_time_ms, (ref,))]
        if underlying in self._oracle_off_twap and off < p.oracle_max_twap_deviation / 2:
            self._oracle_off_twap.discard(underlying)
            return [Breach(BreachKind.ORACLE_DEVIATION, subject, event_time_ms, off, p.oracle_max_twap_deviation,
                           event_time_ms - p.oracle_twap_window_ms, event_time_ms, (ref,), cleared=True)]
        return []

    def _check_stale(self, underlying: str, event_time_ms: int, ref: str) -> list[Breach]:
        """Every source of ``underlying`` that has not published within the stale limit, once each."""
        sources = self._oracle_last.get(underlying)
        if not sources:
            return []  # an underlying without oracles: every index tick asks
        p = self.params
        out = []
        for source, (published, _, source_ref) in sorted(sources.items()) if len(sources) > 1 else sources.items():
            age = event_time_ms - published
            if age > p.oracle_stale_ms and (underlying, source) not in self._oracle_stale:
                self._oracle_stale.add((underlying, source))
                out.append(Breach(BreachKind.ORACLE_STALE, f"{underlying}/{source}", event_time_ms, age / SECOND_MS,
                                  p.oracle_stale_ms / SECOND_MS, published, event_time_ms, (source_ref, ref)))
        return out

    def on_mark(self, instrument: str, event_time_ms: int, mark: float, reference_price: float,
                backing_notional_usd: float, depth_usd: float | None, ref: str,
                largest_holder_share: float | None = None) -> list[Breach]:
        """A linear contract's mark, with its index (``reference_price``), the USD notional of the
        venue's open interest it backs (inf: not published), its book depth within 1 % of mid
        (None: none seen) and the largest holder's share of that open interest as the venue
        publishes it (``MarkPrice.largest_holder_share``; None: not published, no pump). Every
        input is market data, so every engine judges a mark alike, whatever accounts it holds.

        One ``MARK_MANIPULATION`` breach per episode. Level 0 when the mark left its index
        (Mango): it clears once the mark is back within half the threshold of its index, whatever
        the earlier price. Level 1 for a thin-book pump (JELLY, ``_pump``): it does not clear on
        prices; it ends when the instrument is delisted (``delist``), which is then judged no
        more. While it fires,
        ``manipulated`` gives the price before the manipulation, what positions settle at: the
        index (level 0) or the window's extreme the pump started from (level 1)."""
        if not self._admit("mark", instrument, event_time_ms) or instrument in self._delisted:
            return []
        p = self.params
        off = abs(mark / reference_price - 1.0)
        move, anchor = self._mark_move(instrument, event_time_ms, mark, backing_notional_usd, depth_usd, ref)
        if instrument in self._pumped:
            return []
        if instrument in self._mark_firing:
            if off >= p.mark_max_deviation / 2:
                return []
            del self._mark_firing[instrument]
            return [Breach(BreachKind.MARK_MANIPULATION, instrument, event_time_ms, off, p.mark_max_deviation,
                           event_time_ms, event_time_ms, (ref,), cleared=True)]
        if off >= p.mark_max_deviation and backing_notional_usd > 0:
            self._mark_firing[instrument] = reference_price
            return [Breach(BreachKind.MARK_MANIPULATION, instrument, event_time_ms, off, p.mark_max_deviation,
                           event_time_ms, event_time_ms, (ref,))]
        if (anchor is not None and depth_usd is not None and largest_holder_share is not None
                and largest_holder_share >= p.pump_min_concentration
                and self._pump(move, off, backing_notional_usd, depth_usd)):
            self._mark_firing[instrument] = anchor.value
            self._pumped.add(instrument)
            return [Breach(BreachKind.MARK_MANIPULATION, instrument, event_time_ms, move, p.pump_min_move,
                           anchor.event_time_ms, event_time_ms, (anchor.ref, ref), level=1)]
        return []

    def delist(self, instrument: str) -> None:
        """``instrument`` is delisted after a pump (its ``delist_settle`` sent, its positions
        settled at the price ``manipulated`` gave): the pump ends, the instrument leaves
        ``manipulated`` for ``delisted`` for good (relisting is an operator's act). Nothing
        happens for an instrument not firing as a pump."""
        if instrument in self._pumped:
            self._pumped.discard(instrument)
            del self._mark_firing[instrument]
            self._mark_windows.pop(instrument, None)
            self._delisted.add(instrument)

    def _mark_move(self, instrument: str, event_time_ms: int, mark: float, interest_usd: float,
                   depth_usd: float | None, ref: str) -> tuple[float, Sample | None]:
        """The mark's move from its window's extreme (the larger of up and down) and that
        extreme. Only marks the pump rule can judge (a published open interest, a depth) enter
        the window; for the others: (0, None), and no window is kept."""
        if depth_usd is None or not math.isfinite(interest_usd):
            return 0.0, None
        window = self._mark_windows.get(instrument)
        if window is None:
            p = self.params
            window = self._mark_windows[instrument] = RollingExtremes(p.pump_window_ms, p.allowed_lateness_ms,
                                                                      p.window_buckets)
        window.add(Sample(event_time_ms, mark, ref))
        high, low = window.extremes(event_time_ms)
        up, down = mark / low.value - 1.0, 1.0 - mark / high.value
        return (up, low) if up >= down else (down, high)

    def _pump(self, move: float, off: float, interest_usd: float, depth_usd: float) -> bool:
        """The market side of a thin-book pump: the mark moved ``pump_min_move`` within the window
        and is ``pump_min_premium`` off its index, while a published open interest is
        ``pump_interest_depth_multiple`` times the book's depth or more. No open interest (a new
        listing, an empty market) is never a pump, whatever the book."""
        p = self.params
        return (move >= p.pump_min_move and off >= p.pump_min_premium and interest_usd > 0
                and interest_usd >= p.pump_interest_depth_multiple * depth_usd)

    # ------------------------------------------------------------------ queries for the policy

    def oracle_unreliable(self, underlying: str) -> bool:
        """True while an oracle of ``underlying`` is stale, its sources disagree or it is off its
        TWAP: liquidations on that underlying are suspended (Drift does the same)."""
        return (underlying in self._oracle_deviating or underlying in self._oracle_off_twap
                or any(u == underlying for u, _ in self._oracle_stale))

    def unreliable(self, underlyings: Iterable[str]) -> frozenset[str]:
        """What a liquidation waits on: of ``underlyings`` those whose oracle is unreliable
        (``oracle_unreliable``), and every instrument whose mark is manipulated (``manipulated``)
        or that was delisted (``delisted``). Empty at once while none of those holds anything."""
        if not (self._oracle_deviating or self._oracle_off_twap or self._oracle_stale or self._mark_firing
                or self._delisted):
            return frozenset()
        return frozenset((*(u for u in underlyings if self.oracle_unreliable(u)), *self._mark_firing,
                          *self._delisted))

    def manipulated(self) -> dict[str, float]:
        """Every instrument whose mark-manipulation breach fires, with its price before the
        manipulation (``on_mark``)."""
        return dict(self._mark_firing)

    def delisted(self) -> set[str]:
        """The instruments delisted after a pump (``delist``)."""
        return set(self._delisted)

    def margin_idle(self, account: str) -> bool:
        """True when no margin condition of ``account`` is pending or firing: a revaluation
        below every threshold would then change nothing here (the engine skips it)."""
        state = self._accounts.get(account)
        return state is None or all(c.pending_since_ms is None and not c.firing
                                    for c in (state.margin, state.liquidation))

    def margin_code(self, account: str) -> tuple[int, float, int, float]:
        """An account's margin and its liquidation condition for ``margin_unmoved``: each as a
        code (0 idle, 1 pending, 2 firing; -1 when the detectors hold nothing for the account)
        and the time a pending condition fires at if it holds (NaN when not pending)."""
        state = self._accounts.get(account)
        if state is None:
            return -1, math.nan, -1, math.nan
        margin, liquidation = state.margin, state.liquidation
        return _code(margin), _fires_at(margin), _code(liquidation), _fires_at(liquidation)

    def margin_unmoved(self, margin: np.ndarray, margin_due: np.ndarray, liquidation: np.ndarray,
                       liquidation_due: np.ndarray, ratio: np.ndarray, event_time_ms: int) -> np.ndarray:
        """Per account (``margin_code``), whether ``on_margin`` at ``ratio`` and ``event_time_ms``
        would return no breach and change no condition: each is idle and not triggered, pending
        and neither cleared nor held long enough, or firing and not cleared. Such a revaluation
        changes only the account's margin watermark (``advance_margin``)."""
        p = self.params
        with np.errstate(invalid="ignore"):
            return (_quiet(margin, margin_due, event_time_ms, ratio >= p.margin_trigger_ratio,
                           ratio < p.margin_clear_ratio)
                    & _quiet(liquidation, liquidation_due, event_time_ms, ratio >= p.liquidation_ratio,
                             ratio < p.margin_trigger_ratio))

    def advance_margin(self, accounts: Iterable[str], event_time_ms: int) -> None:
        """What ``on_margin`` does for accounts ``margin_unmoved`` holds unmoved: admit the time."""
        get = self._watermarks.get
        for account in accounts:
            watermark = get("margin/" + account)
            if watermark is None or not watermark.admit(event_time_ms):
                self._admit("margin", account, event_time_ms)  # its first, or late: counted there

    def circuit_level(self, underlying: str) -> int:
        """The highest index-move level currently reached for ``underlying`` (0: none)."""
        return self._index_levels[underlying].level if underlying in self._index_levels else 0

    # ------------------------------------------------------------------ state as data

    def accounts(self) -> set[str]:
        """Every account the detectors hold anything for. An account's watermarks are only ever
        made with its ``_AccountState`` (the first event of a key is never late)."""
        return set(self._accounts)

    def account_state(self, account: str) -> dict | None:
        """What the detectors hold for ``account`` as plain data (``DetectorAccountState``): its
        margin conditions, recent withdrawals and its collateral and margin watermarks; None when
        they hold nothing for it."""
        state = self._accounts.get(account)
        if state is None:
            return None
        out: dict[str, Any] = {"margin": state.margin.state(), "liquidation": state.liquidation.state(),
                               "withdrawals": [{"event_time_ms": t, "amount_usd": amount, "ref": ref}
                                               for t, amount, ref in state.withdrawals]}
        for stream in ACCOUNT_STREAMS:
            watermark = self._watermarks.get(f"{stream}/{account}")
            out[f"{stream}_watermark"] = None if watermark is None else watermark.state()
        return out

    def restore_account(self, account: str, state: dict) -> None:
        """Hold for ``account`` what ``account_state`` gave, in place of what is held for it."""
        self._accounts[account] = _AccountState(
            HeldCondition.from_state(state["margin"]), HeldCondition.from_state(state["liquidation"]),
            [(w["event_time_ms"], w["amount_usd"], w["ref"]) for w in state["withdrawals"]])
        for stream in ACCOUNT_STREAMS:
            watermark = state[f"{stream}_watermark"]
            if watermark is None:
                self._watermarks.pop(f"{stream}/{account}", None)
            else:
                self._watermarks[f"{stream}/{account}"] = Watermark.from_state(watermark)

    def drop_account(self, account: str) -> None:
        """Forget ``account``: its conditions, withdrawals and watermarks."""
        self._accounts.pop(account, None)
        for stream in ACCOUNT_STREAMS:
            self._watermarks.pop(f"{stream}/{account}", None)

    def market_state(self) -> dict:
        """Everything not per account as plain data (``DetectorMarketState``): the index, IV,
        depth, oracle and mark state (the pump windows, the manipulated instruments with their
        prices before), the watermarks of those keys and ``late_events``."""
        return {
            "late_events": self.late_events,
            "watermarks": {key: watermark.state() for key, watermark in self._watermarks.items()
                           if not _account_watermark(key)},
            "index_windows": {u: window.state() for u, window in self._index_windows.items()},
            "index_levels": {u: state.level for u, state in self._index_levels.items()},
            "iv_windows": {key: window.state() for key, window in self._iv_windows.items()},
            "iv_firing": sorted(self._iv_firing),
            "depth": {instrument: held.state() for instrument, held in self._depth.items()},
            "oracle_last": {u: {source: {"publish_time_ms": published, "price": price, "ref": ref}
                                for source, (published, price, ref) in sources.items()}
                            for u, sources in self._oracle_last.items()},
            "oracle_twap": {u: window.state() for u, window in self._oracle_twap.items()},
            "oracle_stale": [{"underlying": u, "source": source} for u, source in sorted(self._oracle_stale)],
            "oracle_deviating": sorted(self._oracle_deviating),
            "oracle_off_twap": sorted(self._oracle_off_twap),
            "mark_windows": {instrument: window.state() for instrument, window in self._mark_windows.items()},
            "mark_firing": dict(self._mark_firing),
            "mark_pumped": sorted(self._pumped),
            "mark_delisted": sorted(self._delisted),
        }

    def restore_market(self, state: dict) -> None:
        """Hold what ``market_state`` gave in place of the market side; accounts are kept."""
        self.late_events = state["late_events"]
        self._watermarks = {key: watermark for key, watermark in self._watermarks.items()
                            if _account_watermark(key)}
        self._watermarks.update((key, Watermark.from_state(w)) for key, w in state["watermarks"].items())
        self._index_windows = {u: RollingExtremes.from_state(w) for u, w in state["index_windows"].items()}
        self._index_levels = defaultdict(_LevelState, {u: _LevelState(level)
                                                       for u, level in state["index_levels"].items()})
        self._index_feeds = {}
        self._iv_windows = {key: RollingExtremes.from_state(w) for key, w in state["iv_windows"].items()}
        self._iv_firing = set(state["iv_firing"])
        self._depth = {instrument: HeldCondition.from_state(held) for instrument, held in state["depth"].items()}
        self._oracle_last = defaultdict(dict, {
            u: {source: (quote["publish_time_ms"], quote["price"], quote["ref"]) for source, quote in sources.items()}
            for u, sources in state["oracle_last"].items()})
        self._oracle_twap = {u: RollingTwap.from_state(w) for u, w in state["oracle_twap"].items()}
        self._oracle_stale = {(stale["underlying"], stale["source"]) for stale in state["oracle_stale"]}
        self._oracle_deviating = set(state["oracle_deviating"])
        self._oracle_off_twap = set(state["oracle_off_twap"])
        self._mark_windows = {instrument: RollingExtremes.from_state(w)
                              for instrument, w in state["mark_windows"].items()}
        self._mark_firing = dict(state["mark_firing"])
        self._pumped = set(state["mark_pumped"])
        self._delisted = set(state["mark_delisted"])


def _code(condition: HeldCondition) -> int:
    return 2 if condition.firing else 0 if condition.pending_since_ms is None else 1


def _fires_at(condition: HeldCondition) -> float:
    return math.nan if condition.pending_since_ms is None else condition.pending_since_ms + condition.hold_ms


def _quiet(code: np.ndarray, due: np.ndarray, event_time_ms: int, triggered: np.ndarray,
           cleared: np.ndarray) -> np.ndarray:
    """Where ``HeldCondition.update`` changes nothing and reports nothing (``margin_code``)."""
    return (((code == 0) & ~triggered) | ((code == 1) & ~cleared & (event_time_ms < due))
            | ((code == 2) & ~cleared))


def _account_watermark(key: str) -> bool:
    """Whether a watermark key (``stream/key``) is an account's."""
    return key.split("/", 1)[0] in ACCOUNT_STREAMS
