"""``backstop margin --portfolio P.json --market M.json [--json]``: what-if margin of one account.

The only module of the risk package that reads files. Every input problem is a ``UserError``
naming the field (``positions[1].qty: ...``), printed as one line by the CLI: a person fixing a
JSON file needs the field, not a traceback. Files are UTF-8 JSON; a field the format does not
have is refused (a misspelt ``avg_prce`` would otherwise be ignored), and every number is
finite and within the bounds below (a vol of 55 is 5,500 %, not 55 %). The numeric modules (numpy, scipy) are imported
when the command runs, not when ``backstop`` builds its parser for some other command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import arguments
from pipelines.errors import UserError
from pipelines.events.validation import MAX_PRICE  # a larger price is a typo

if TYPE_CHECKING:
    from pipelines.risk.book import Book, BookRisk, Portfolio
    from pipelines.risk.market import MarketState


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "margin", help="what-if portfolio margin, Greeks and worst scenario of one account",
        description="Scenario portfolio margin (Deribit/Paradex grid) of one account; see docs/risk-model.md.",
    )
    parser.add_argument("--portfolio", required=True, metavar="P.json", help="account, collateral_usd, positions")
    parser.add_argument("--market", required=True, metavar="M.json", help="time, underlyings, optional instruments")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--adaptive", action="store_true", help="add the adaptive (liquidation-horizon) add-on")
    parser.add_argument("--realised-vol", action="append", default=[], metavar="U=VOL",
                        help="realised vol of an underlying for --adaptive (repeatable), e.g. BTC=0.9")
    parser.add_argument("--depth", action="append", default=[], metavar="U=USD",
                        help="one-side book depth within 1%% of mid for --adaptive (repeatable), e.g. BTC=2e6")
    parser.add_argument("--liquidate-to", type=arguments.ratio, metavar="RATIO",
                        help="also print the Greek-aware liquidation plan down to this margin ratio")
    parser.set_defaults(func=run)


# ---- input ---------------------------------------------------------------------------------

#: contracts of one position; with MAX_PRICE, notionals stay far from float overflow
MAX_QUANTITY = 1e9
#: collateral and book depth in USD
MAX_USD = 1e15
#: vols and IVs are annualised fractions (0.55 is 55 %); above 1,000 % is a percent typed as a number
MAX_VOL = 10.0
#: interest rates are fractions too (0.05 is 5 %)
MAX_RATE = 1.0
VOL_HINT = " (1,000 %); vols are fractions: 0.55 for 55 %"

PORTFOLIO_FIELDS = ("account", "collateral_usd", "positions")
POSITION_FIELDS = ("instrument", "qty", "avg_price")
MARKET_FIELDS = ("time", "underlyings", "instruments")
UNDERLYING_FIELDS = ("index", "vol", "rate")
INSTRUMENT_FIELDS = ("iv",)

def _load_json(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--{what} {path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"--{what} {path}: not UTF-8 text (JSON files are UTF-8; save it as UTF-8)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--{what} {path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _field(obj: Any, key: str, where: str, required: bool = True) -> Any:
    if not isinstance(obj, dict):
        raise UserError(f"{where or 'top level'}: expected a JSON object")
    if key not in obj:
        if required:
            raise UserError(f"{where + '.' if where else ''}{key}: missing field")
        return None
    return obj[key]


def _known_fields(obj: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """Refuse the first field of ``obj`` that is not in ``allowed``, naming it."""
    for key in obj:
        if key not in allowed:
            raise UserError(f"{where + '.' if where else ''}{key}: unknown field (expected {', '.join(allowed)})")


def _number(value: Any, field: str, limit: float, positive: bool = False, non_negative: bool = False,
            hint: str = "") -> float:
    """A finite JSON number of magnitude at most ``limit``; ``hint`` follows the out-of-bound message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{field}: expected a finite number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise UserError(f"{field}: expected a finite number, got {value if isinstance(value, float) else number!r}")
    if abs(number) > limit:
        raise UserError(f"{field}: {number:g} is beyond the plausible bound of {limit:g}{hint}")
    if positive and number <= 0:
        raise UserError(f"{field}: must be positive, got {value!r}")
    if non_negative and number < 0:
        raise UserError(f"{field}: must not be negative, got {value!r}")
    return number


def _vol(value: Any, field: str) -> float:
    """An annualised vol as a fraction, above 0 and at most ``MAX_VOL``."""
    return _number(value, field, MAX_VOL, positive=True, hint=VOL_HINT)


def parse_time(value: Any, field: str = "time") -> int:
    """ISO 8601 with a zone (``2026-11-23T12:00:00Z``) or epoch milliseconds -> epoch ms UTC."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise UserError(f"{field}: expected an ISO 8601 time such as 2026-11-23T12:00:00Z")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{field}: {value!r} is not an ISO 8601 time such as 2026-11-23T12:00:00Z") from None
    if parsed.tzinfo is None:
        raise UserError(f"{field}: {value!r} has no time zone (add Z for UTC)")
    return int(round(parsed.timestamp() * 1000))


def parse_market(data: Any) -> MarketState:
    from pipelines.risk.instruments import parse_instrument
    from pipelines.risk.market import MarketState, UnderlyingMarket

    time_ms = parse_time(_field(data, "time", ""))
    _known_fields(data, MARKET_FIELDS, "")
    unds = _field(data, "underlyings", "")
    if not isinstance(unds, dict) or not unds:
        raise UserError("underlyings: expected a non-empty object of underlying -> {index, vol, rate}")
    underlyings = {}
    for name, u in unds.items():
        where = f"underlyings.{name}"
        rate = _field(u, "rate", where, required=False)
        _known_fields(u, UNDERLYING_FIELDS, where)
        underlyings[name.upper()] = UnderlyingMarket(
            index=_number(_field(u, "index", where), f"{where}.index", MAX_PRICE, positive=True),
            vol=_vol(_field(u, "vol", where), f"{where}.vol"),
            rate=0.0 if rate is None else _number(rate, f"{where}.rate", MAX_RATE),
        )
    vols: dict[str, float] = {}
    instruments = _field(data, "instruments", "", required=False) or {}
    if not isinstance(instruments, dict):
        raise UserError("instruments: expected an object of instrument -> {iv}")
    for name, spec in instruments.items():
        parse_instrument(name)
        vols[name] = _vol(_field(spec, "iv", f"instruments.{name}"), f"instruments.{name}.iv")
        _known_fields(spec, INSTRUMENT_FIELDS, f"instruments.{name}")
    return MarketState(time_ms, underlyings, vols)


def parse_portfolio(data: Any) -> Portfolio:
    from pipelines.risk.book import Portfolio, Position
    from pipelines.risk.instruments import parse_instrument

    account = _field(data, "account", "")
    _known_fields(data, PORTFOLIO_FIELDS, "")
    if not isinstance(account, str) or not account:
        raise UserError("account: expected a non-empty string")
    collateral = _number(_field(data, "collateral_usd", ""), "collateral_usd", MAX_USD)
    raw = _field(data, "positions", "")
    if not isinstance(raw, list):
        raise UserError("positions: expected a list")
    positions = []
    for k, p in enumerate(raw):
        where = f"positions[{k}]"
        name = _field(p, "instrument", where)
        _known_fields(p, POSITION_FIELDS, where)
        if not isinstance(name, str):
            raise UserError(f"{where}.instrument: expected a string")
        try:
            parse_instrument(name)
        except UserError as exc:
            raise UserError(f"{where}.instrument: {exc}") from None
        qty = _number(_field(p, "qty", where), f"{where}.qty", MAX_QUANTITY)
        avg = _field(p, "avg_price", where, required=False)
        positions.append(Position(name, qty, None if avg is None else
                                  _number(avg, f"{where}.avg_price", MAX_PRICE, non_negative=True)))
    return Portfolio(account, collateral, tuple(positions))


def _check_live(portfolio: Portfolio, market: MarketState) -> None:
    from pipelines.risk.instruments import parse_instrument

    for k, p in enumerate(portfolio.positions):
        inst = parse_instrument(p.instrument)
        if inst.underlying not in market.underlyings:
            raise UserError(f"positions[{k}].instrument: {p.instrument}: underlyings.{inst.underlying} missing "
                            f"from the market file")
        if inst.expiry_ms is not None and inst.expiry_ms <= market.time_ms:
            expiry = dt.datetime.fromtimestamp(inst.expiry_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
            raise UserError(f"positions[{k}].instrument: {p.instrument} expired at {expiry}, before the market time")


def _pairs(items: list[str], flag: str, limit: float, hint: str = "") -> dict[str, float]:
    """``U=NUMBER`` flags, each number finite, not negative and at most ``limit``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number):
            raise UserError(f"{flag} {item!r}: expected UNDERLYING=NUMBER")
        out[name.upper()] = _number(number, f"{flag} {item}", limit, non_negative=True, hint=hint)
    return out


# ---- report --------------------------------------------------------------------------------

VOL_LABEL = {1: "up", -1: "down", 0: "unchanged"}  # margin.VOL_UP / VOL_DOWN / VOL_NONE


def report(book: Book, risk: BookRisk) -> dict[str, Any]:
    """The --json object (also the source of the table)."""
    from pipelines.risk.instruments import Kind

    table = book.instruments
    positions = []
    for p in range(len(book.qty)):
        i = int(book.instrument_idx[p])
        q = float(book.qty[p])
        inst = table.instruments[i]
        mark = float(risk.unit.price[i])
        positions.append({
            "instrument": inst.name, "kind": str(inst.kind), "qty": q, "mark": mark,
            "value_usd": q * mark, "unrealised_pnl_usd": float(book.cost_qty[p] * mark - book.cost[p]),
            "delta": q * float(risk.unit.delta[i]), "gamma": q * float(risk.unit.gamma[i]),
            "vega": q * float(risk.unit.vega[i]), "theta": q * float(risk.unit.theta[i]),
            "iv": float(risk.inputs.vol[i]) if inst.kind is Kind.OPTION else None,
        })
    greeks, charges = {}, {}
    worst: dict[str, Any] | None = None
    for u, name in enumerate(risk.underlyings):
        greeks[name] = {g: float(getattr(risk, g)[0, u]) for g in ("delta", "gamma", "vega", "theta")}
        greeks[name].update(gross_notional_usd=float(risk.gross_notional[0, u]),
                            net_notional_usd=float(risk.net_notional[0, u]))
        col = int(risk.worst_scenario[0, u])
        move, kind, weight = risk.grid.describe(u, col)
        scen = {"underlying": name, "move": move, "vol_shock": VOL_LABEL[kind], "weight": weight,
                "pnl_usd": float(risk.worst_pnl[0, u]), "weighted_loss_usd": float(risk.scenario_loss[0, u])}
        charges[name] = {"scenario_loss_usd": float(risk.scenario_loss[0, u]),
                         "delta_charge_usd": float(risk.delta_charge[0, u]),
                         "short_option_charge_usd": float(risk.short_option_charge[0, u]),
                         "adaptive_addon_usd": float(risk.adaptive_addon[0, u]), "worst_scenario": scen}
        if worst is None or scen["weighted_loss_usd"] > worst["weighted_loss_usd"]:
            worst = scen
    ratio = float(risk.margin_ratio[0])
    return {
        "account": book.accounts[0],
        "equity_usd": float(risk.equity[0]),
        "unrealised_pnl_usd": float(risk.unrealised_pnl[0]),
        "maintenance_margin_usd": float(risk.maintenance[0]),
        "initial_margin_usd": float(risk.initial[0]),
        "margin_ratio": ratio if math.isfinite(ratio) else None,
        "liquidatable": bool(risk.liquidatable[0]),
        "greeks": greeks,
        "margin_by_underlying": charges,
        "positions": positions,
        "worst_scenario": worst,
    }


def _ratio_text(ratio: float | None) -> str:
    return "inf" if ratio is None else f"{ratio:.4f}"


#: widths of the position table's columns; cells wider than their column still get a space between them
POSITION_WIDTHS = (24, 10, 12, 10, 11, 11, 10)


def _row(*cells: str) -> str:
    """A position-table line: the first cell left-aligned, the rest right-aligned."""
    head, *rest = cells
    return f"  {head:<{POSITION_WIDTHS[0]}}" + "".join(f" {c:>{w}}" for c, w in zip(rest, POSITION_WIDTHS[1:]))


def _greek_cells(g: dict[str, Any]) -> tuple[str, str, str, str]:
    return f"{g['delta']:,.4f}", f"{g['gamma']:.3e}", f"{g['vega']:,.2f}", f"{g['theta']:,.2f}"


def _table(out: dict[str, Any]) -> str:
    ratio = out["margin_ratio"]
    lines = [
        f"account {out['account']}",
        f"  equity              {out['equity_usd']:>16,.2f} USD   (unrealised PnL {out['unrealised_pnl_usd']:,.2f})",
        f"  maintenance margin  {out['maintenance_margin_usd']:>16,.2f} USD",
        f"  initial margin      {out['initial_margin_usd']:>16,.2f} USD",
        f"  margin ratio        {_ratio_text(ratio):>16}"
        f"{'   LIQUIDATABLE' if out['liquidatable'] else ''}",
        "",
        _row("instrument", "qty", "mark", "delta", "gamma", "vega", "theta"),
        _row("", "", "USD", "coin", "coin/USD", "USD/vol pt", "USD/day"),
    ]
    for p in out["positions"]:
        lines.append(_row(p["instrument"], f"{p['qty']:,.4g}", f"{p['mark']:,.2f}", *_greek_cells(p)))
    for u, g in out["greeks"].items():
        lines.append(_row(f"{u} total", "", "", *_greek_cells(g)))
    lines.append("")
    for u, c in out["margin_by_underlying"].items():
        w = c["worst_scenario"]
        lines.append(f"  {u}: scenario loss {c['scenario_loss_usd']:,.2f} (worst: move {w['move']:+.0%}, vol "
                     f"{w['vol_shock']}, weight {w['weight']:.4g}, PnL {w['pnl_usd']:,.2f}) + delta charge "
                     f"{c['delta_charge_usd']:,.2f} + short-option charge {c['short_option_charge_usd']:,.2f}"
                     + (f" + adaptive {c['adaptive_addon_usd']:,.2f}" if c["adaptive_addon_usd"] else ""))
    if "liquidation_plan" in out:
        plan = out["liquidation_plan"]
        lines += ["", f"  liquidation plan to margin ratio {plan['target_ratio']}: "
                      f"{'reached' if plan['reached'] else 'NOT reached'}"]
        for o in plan["orders"]:
            lines.append(f"    {o['instrument']:<24}{o['qty']:>+10.4g}  slippage {o['slippage_usd']:>10,.2f}"
                         f"  ratio after {_ratio_text(o['margin_ratio_after'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pipelines.risk.adaptive import AdaptiveParams, MarketConditions
    from pipelines.risk.book import Book, revalue_book
    from pipelines.risk.instruments import InstrumentTable, parse_instrument
    from pipelines.risk.liquidation_order import plan_liquidation

    market = parse_market(_load_json(args.market, "market"))
    portfolio = parse_portfolio(_load_json(args.portfolio, "portfolio"))
    _check_live(portfolio, market)
    adaptive = AdaptiveParams() if args.adaptive else None
    conditions = MarketConditions(_pairs(args.realised_vol, "--realised-vol", MAX_VOL, VOL_HINT),
                                  _pairs(args.depth, "--depth", MAX_USD))
    instruments = InstrumentTable.of(parse_instrument(n) for n in sorted({p.instrument for p in portfolio.positions}))
    book = Book.from_portfolios([portfolio], instruments)
    risk = revalue_book(book, market, adaptive=adaptive, conditions=conditions)
    out = report(book, risk)
    if args.liquidate_to is not None:
        plan = plan_liquidation(book, risk, 0, args.liquidate_to,
                                adaptive=adaptive, conditions=conditions)
        out["liquidation_plan"] = {
            "target_ratio": plan.target_ratio, "reached": plan.reached,
            "orders": [{"instrument": o.instrument, "qty": o.qty, "slippage_usd": o.slippage_usd,
                        "maintenance_after_usd": o.maintenance_after, "equity_after_usd": o.equity_after,
                        "margin_ratio_after": o.margin_ratio_after if math.isfinite(o.margin_ratio_after) else None}
                       for o in plan.orders],
        }
    print(json.dumps(out, indent=2, allow_nan=False) if args.json else _table(out))
    return 0
