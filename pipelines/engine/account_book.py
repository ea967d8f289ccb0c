"""A shard's accounts (positions and collateral) as the risk core's arrays, rebuilt only on change.

The book is built once per change of positions (or of which underlyings are priced) and reused:
per tick, collateral is valued once per asset price (the same ``Book`` while the prices hold),
and the accounts a tick touches are the book's holders of the moved underlyings, kept per row
(``BuiltBook.holders``), with the accounts updated this tick.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from pipelines.risk.book import Book, ResidentRisk
from pipelines.risk.instruments import Instrument, InstrumentTable, parse_instrument, underlying_of

STABLE = frozenset({"USD", "USDC", "USDT"})
HOLDING_SETS = 64  # BuiltBook.touched_rows: sets of moved underlyings whose rows are kept


def asset_price(asset: str, prices: Mapping[str, float]) -> float:
    """USD value of one unit of a collateral asset: stablecoins at 1, others at their index
    price, 0 while it has none (unpriced collateral counts for nothing)."""
    return 1.0 if asset in STABLE else prices.get(asset, 0.0)


@lru_cache(maxsize=100_000)
def instrument(name: str) -> Instrument:
    return parse_instrument(name)


@dataclasses.dataclass(frozen=True, eq=False)
class BuiltBook:
    """The arrays of one version of the accounts. ``book.collateral`` is zero: call
    ``with_collateral`` with the current prices."""

    book: Book
    where: dict[str, int]  # account -> row in book.accounts
    collateral_account: np.ndarray  # per collateral entry: account row
    assets: tuple[str, ...]  # the collateral assets held, each once
    collateral_asset: np.ndarray  # per collateral entry: its asset's index into ``assets``
    collateral_amount: np.ndarray
    holders: tuple[np.ndarray, ...]  # per underlying of the table: the rows of the accounts holding it, ascending
    underlyings_of: tuple[tuple[str, ...], ...]  # per row: the underlyings the account holds
    closes: tuple[tuple[tuple[str, str, float], ...], ...]  # per row: (instrument, underlying, -qty) by instrument
    holding: dict[frozenset[str], np.ndarray] = dataclasses.field(default_factory=dict)  # touched_rows' cache
    valued: list[tuple[tuple[float, ...], Book]] = dataclasses.field(default_factory=list)  # with_collateral's last
    # the compiled revaluation's outputs for this book's ticks (``Engine._revaluation``): one tick's at a time
    resident: ResidentRisk = dataclasses.field(default_factory=ResidentRisk)

    def with_collateral(self, prices: Mapping[str, float]) -> Book:
        """The book with every account's collateral valued at ``prices`` (stablecoins at 1):
        each asset priced once, not once per account holding it; the same ``Book`` again while
        the assets' prices are unchanged (its arrays are not to be written to)."""
        asset_prices = tuple(asset_price(a, prices) for a in self.assets)
        if self.valued and self.valued[0][0] == asset_prices:
            return self.valued[0][1]
        price = np.array(asset_prices, dtype=np.float64)[self.collateral_asset]
        usd = np.bincount(self.collateral_account, weights=self.collateral_amount * price,
                          minlength=len(self.book.accounts))
        # from the last one valued: what a tick derived from its positions is carried over
        book = (self.valued[0][1] if self.valued else self.book).with_collateral(usd)
        self.valued[:] = [(asset_prices, book)]
        return book

    def mask(self, accounts: Collection[str]) -> np.ndarray:
        """A boolean per book row: is the account in ``accounts``."""
        out = np.zeros(len(self.book.accounts), dtype=bool)
        out[[self.where[a] for a in accounts if a in self.where]] = True
        return out

    def touched_rows(self, accounts: Collection[str], moved: Collection[str]) -> np.ndarray:
        """The rows, ascending, of the accounts a tick touched: ``accounts`` updated, or holding
        an underlying in ``moved``. The rows of a set of moved underlyings are made once per book
        and kept for the ``HOLDING_SETS`` sets made last (many underlyings move in many sets)."""
        key = frozenset(moved)
        rows = self.holding.get(key)
        if rows is None:
            held = [h for u, h in zip(self.book.instruments.underlyings, self.holders) if u in key]
            if len(self.holding) >= HOLDING_SETS:
                del self.holding[next(iter(self.holding))]
            rows = self.holding[key] = np.unique(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
        updated = [self.where[a] for a in accounts if a in self.where]
        return np.union1d(rows, updated) if updated else rows

    def first_touch(self, row: int, accounts: Mapping[str, int], moved: Mapping[str, int]) -> int:
        """The sequence number of the first event this tick that touched the account of ``row``
        (one of ``touched_rows``): its own update (``accounts``), or a move of an underlying it
        holds (``moved``)."""
        touches = [moved[u] for u in self.underlyings_of[row] if u in moved]
        own = accounts.get(self.book.accounts[row])
        return min(touches if own is None else touches + [own])


class _AccountPart(NamedTuple):
    """One account's share of a built book, kept until the account changes: its positions by
    instrument name, the underlyings they are on (by name) and its collateral by asset."""

    names: tuple[str, ...]
    qty: tuple[float, ...]
    avg: tuple[float, ...]
    underlyings: frozenset[str]
    closes: tuple[tuple[str, str, float], ...]  # (instrument, underlying, -qty) per position
    assets: tuple[str, ...]
    amounts: tuple[float, ...]


class AccountBook:
    """Positions and collateral per account, with the ``BuiltBook`` of the current version."""

    def __init__(self) -> None:
        self.positions: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
        self.collateral: dict[str, dict[str, float]] = defaultdict(dict)
        self._version = 0
        self._built: BuiltBook | None = None
        self._built_key: tuple[int, frozenset[str]] | None = None
        # per instrument of the built table: the definition it was built from (None: its name); held
        # here, so ``is`` cannot be fooled by a reused id
        self._defined: tuple[tuple[str, Instrument | None], ...] = ()
        self._table: InstrumentTable | None = None  # the last built book's table
        self._parts: dict[str, _AccountPart] = {}  # per account unchanged since it was last built

    def held(self) -> set[str]:
        """Every account with positions or collateral."""
        return set(self.positions) | set(self.collateral)

    def account_state(self, account: str) -> dict:
        """An account's positions and collateral as plain data, in the order they were first set
        (``collateral_usd`` sums in that order). None where the account has no entry: an entry
        emptied by closing every position still makes the account a row of the built book, so
        its presence is state too."""
        positions, collateral = self.positions.get(account), self.collateral.get(account)
        return {"positions": None if positions is None else [
                    {"instrument": name, "quantity": q, "average_price": price}
                    for name, (q, price) in positions.items()],
                "collateral": None if collateral is None else [
                    {"asset": asset, "amount": amount} for asset, amount in collateral.items()]}

    def restore_account(self, account: str, state: dict) -> None:
        """Set an account to ``account_state``'s data, replacing whatever it held."""
        self.drop_account(account)
        if state["positions"] is not None:
            self.positions[account] = {p["instrument"]: (p["quantity"], p["average_price"]) for p in state["positions"]}
        if state["collateral"] is not None:
            self.collateral[account] = {c["asset"]: c["amount"] for c in state["collateral"]}

    def drop_account(self, account: str) -> None:
        self.positions.pop(account, None)
        self.collateral.pop(account, None)
        self._changed(account)

    def set_position(self, account: str, name: str, quantity: float, average_price: float) -> None:
        if quantity == 0:
            self.positions[account].pop(name, None)
        else:
            self.positions[account][name] = (quantity, average_price)
        self._changed(account)

    def set_collateral(self, account: str, asset: str, amount: float) -> None:
        self.collateral[account][asset] = amount
        self._changed(account)

    def _changed(self, account: str) -> None:
        """A new version of the accounts, ``account``'s part to be made again."""
        self._parts.pop(account, None)
        self._version += 1

    def collateral_usd(self, account: str, prices: Mapping[str, float]) -> float:
        return sum(amount * asset_price(asset, prices)
                   for asset, amount in self.collateral.get(account, {}).items())

    def _part(self, account: str) -> _AccountPart:
        """The account's share of a built book, made once per change of the account."""
        part = self._parts.get(account)
        if part is None:
            legs = sorted(self.positions.get(account, {}).items())
            collateral = sorted(self.collateral.get(account, {}).items())
            closes = tuple((name, underlying_of(name), -q) for name, (q, _) in legs)
            part = self._parts[account] = _AccountPart(
                tuple(name for name, _ in legs), tuple(q for _, (q, _) in legs),
                tuple(price for _, (_, price) in legs), frozenset(u for _, u, _ in closes), closes,
                tuple(asset for asset, _ in collateral), tuple(amount for _, amount in collateral))
        return part

    def built(self, priced: Collection[str], defined: Mapping[str, Instrument] | None = None) -> BuiltBook:
        """The arrays of every account that can be priced with ``priced`` underlyings. Instruments
        are ``defined``'s (the market board's, from ``InstrumentDefinition`` records) where it has
        them, else read from their names. Rebuilt when positions, the priced underlyings or the
        definition of an instrument in the table change."""
        defined = {} if defined is None else defined
        key = (self._version, frozenset(priced))
        if self._built is None or self._built_key != key or any(defined.get(n) is not d for n, d in self._defined):
            self._built = self._build(key[1], defined)
            self._built_key = key
        return self._built

    def _table_of(self, instruments: tuple[Instrument, ...]) -> InstrumentTable:
        """The table of ``instruments``: the last built book's table object while its instruments
        are equal, one for one, so what is cached per table (pricing and scenario layouts) holds
        across rebuilds."""
        if self._table is None or self._table.instruments != instruments:
            self._table = InstrumentTable.of(instruments)
        return self._table

    def _build(self, priced: frozenset[str], defined: Mapping[str, Instrument]) -> BuiltBook:
        parts = {a: self._part(a) for a in self.held()}
        # an account waits until every underlying it holds has an index price
        accounts = sorted(a for a, part in parts.items() if part.underlyings <= priced)
        names = sorted({name for a in accounts for name in parts[a].names})
        self._defined = tuple((n, defined.get(n)) for n in names)
        table = self._table_of(tuple(defined.get(n) or instrument(n) for n in names))
        where_instrument = table.index()
        acc_idx: list[int] = []
        ins_idx: list[int] = []
        qty: list[float] = []
        avg: list[float] = []
        col_acc: list[int] = []
        col_asset: list[str] = []
        col_amount: list[float] = []
        for i, account in enumerate(accounts):
            part = parts[account]
            acc_idx += [i] * len(part.names)
            ins_idx += map(where_instrument.__getitem__, part.names)
            qty += part.qty
            avg += part.avg
            col_acc += [i] * len(part.assets)
            col_asset += part.assets
            col_amount += part.amounts
        book = Book.from_arrays(accounts, np.zeros(len(accounts)), table, np.array(acc_idx, dtype=np.int64),
                                np.array(ins_idx, dtype=np.int64), np.array(qty, dtype=np.float64),
                                np.array(avg, dtype=np.float64))
        assets = tuple(sorted(set(col_asset)))
        where_asset = {a: k for k, a in enumerate(assets)}
        holders, underlyings_of = _holdings(book)
        return BuiltBook(book, {a: i for i, a in enumerate(accounts)}, np.array(col_acc, dtype=np.int64), assets,
                         np.array([where_asset[a] for a in col_asset], dtype=np.int64),
                         np.array(col_amount, dtype=np.float64), holders, underlyings_of,
                         tuple(parts[a].closes for a in accounts))


def _holdings(book: Book) -> tuple[tuple[np.ndarray, ...], tuple[tuple[str, ...], ...]]:
    """Per underlying of the book's table, the rows holding it (ascending); per row, the
    underlyings it holds (sorted: the table's underlyings are). Both from the book's distinct
    (account, underlying) rows, in ascending order."""
    n_und = book.n_underlyings
    pairs = np.unique(book.rows)
    account, underlying = pairs // max(n_und, 1), pairs % max(n_und, 1)
    holders = tuple(account[underlying == k] for k in range(n_und))
    held: list[list[str]] = [[] for _ in book.accounts]
    names = book.instruments.underlyings
    for i, k in zip(account.tolist(), underlying.tolist()):
        held[i].append(names[k])
    return holders, tuple(map(tuple, held))
