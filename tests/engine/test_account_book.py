"""The built book: its touched rows (the holders of the moved underlyings and the updated accounts),
its instrument table (the last one again while the instruments are the same)."""

from __future__ import annotations

import dataclasses
import itertools
import random

from pipelines.engine.account_book import HOLDING_SETS, AccountBook, instrument

UNDERLYINGS = [f"U{k}" for k in range(8)]


def _book(seed: int) -> tuple[AccountBook, dict[str, set[str]]]:
    rng = random.Random(seed)
    book, holds = AccountBook(), {}
    for a in range(40):
        account = f"acct-{a:02d}"
        held = set(rng.sample(UNDERLYINGS, rng.randint(0, 3)))
        holds[account] = held
        book.set_collateral(account, "USDC", 1_000.0)
        for u in sorted(held):
            book.set_position(account, f"{u}-PERPETUAL", rng.choice([-2.0, 1.0, 3.0]), 100.0)
    return book, holds


def test_touched_rows_are_the_holders_of_what_moved_and_the_updated_accounts() -> None:
    book, holds = _book(7)
    built = book.built(UNDERLYINGS)
    rng = random.Random(3)
    for moved in itertools.chain(*(itertools.combinations(UNDERLYINGS, k) for k in range(4))):
        updated = set(rng.sample(sorted(holds), 2))
        expected = sorted(built.where[a] for a, held in holds.items() if held & set(moved) or a in updated)
        assert built.touched_rows(updated, moved).tolist() == expected
    assert len(built.holding) <= HOLDING_SETS  # 93 sets moved: only the latest are kept
    assert frozenset(UNDERLYINGS[5:8]) in built.holding


def test_a_rebuilt_book_keeps_its_table_while_the_instruments_are_the_same() -> None:
    book, _ = _book(11)
    first = book.built(UNDERLYINGS).book
    book.set_position("acct-00", "U0-PERPETUAL", 5.0, 90.0)
    book.set_collateral("acct-01", "USDC", 10.0)
    rebuilt = book.built(UNDERLYINGS).book
    assert rebuilt is not first and rebuilt.instruments is first.instruments


def test_a_new_instrument_or_definition_gives_a_new_table() -> None:
    book, _ = _book(11)
    first = book.built(UNDERLYINGS).book.instruments
    book.set_position("acct-00", "U7-27DEC26", 1.0, 90.0)
    added = book.built(UNDERLYINGS).book.instruments
    assert added is not first and "U7-27DEC26" in added.names
    wider = dataclasses.replace(instrument("U7-27DEC26"), contract_size=10.0)
    redefined = book.built(UNDERLYINGS, {"U7-27DEC26": wider}).book.instruments
    assert redefined is not added and redefined.contract_size[redefined.index()["U7-27DEC26"]] == 10.0


def _same_built(a: AccountBook, b: AccountBook, priced: list[str]) -> None:
    x, y = a.built(priced), b.built(priced)
    assert x.book.accounts == y.book.accounts and x.book.instruments.names == y.book.instruments.names
    for field in ("account_idx", "instrument_idx", "qty", "cost_qty", "cost", "rows", "position_start"):
        assert getattr(x.book, field).tolist() == getattr(y.book, field).tolist(), field
    assert (x.where, x.assets, x.underlyings_of, x.closes) == (y.where, y.assets, y.underlyings_of, y.closes)
    for field in ("collateral_account", "collateral_asset", "collateral_amount"):
        assert getattr(x, field).tolist() == getattr(y, field).tolist(), field
    assert [h.tolist() for h in x.holders] == [h.tolist() for h in y.holders]


def test_a_book_rebuilt_after_changes_equals_one_built_afresh() -> None:
    book, holds = _book(5)
    rng = random.Random(9)
    accounts = sorted(holds) + ["acct-new"]
    for step in range(60):
        priced = UNDERLYINGS[: rng.randint(4, 8)]
        book.built(priced)
        account, u = rng.choice(accounts), rng.choice(UNDERLYINGS)
        change = rng.randrange(4)
        if change == 0:
            book.set_position(account, f"{u}-PERPETUAL", rng.choice([0.0, -1.0, 2.0]), 90.0 + step)
        elif change == 1:
            book.set_collateral(account, rng.choice(["USDC", "BTC"]), float(step))
        elif change == 2:
            book.drop_account(account)
        else:
            book.restore_account(account, book.account_state(rng.choice(accounts)))
        fresh = AccountBook()
        for a in book.held():
            fresh.restore_account(a, book.account_state(a))
        _same_built(book, fresh, priced)


def test_a_coin_collateral_book_revalued_at_new_prices_keeps_what_its_positions_gave() -> None:
    """A book holding BTC collateral is a new ``Book`` each time BTC's price moves; what was made
    from its positions (the compiled layout's ``position_values``, the planner's resident arrays
    in ``derived``) is carried over, and only the collateral differs."""
    book = AccountBook()
    book.set_collateral("a", "BTC", 2.0)
    book.set_collateral("b", "USDC", 1_000.0)
    book.set_position("a", "BTC-PERPETUAL", 1.0, 100.0)
    book.set_position("b", "BTC-PERPETUAL", -1.0, 100.0)
    built = book.built(["BTC"])
    first = built.with_collateral({"BTC": 100.0})
    values, derived = first.position_values, first.derived
    derived["probe"] = object()
    moved = built.with_collateral({"BTC": 150.0})
    assert moved is not first and moved.collateral.tolist() == [300.0, 1_000.0]
    assert first.collateral.tolist() == [200.0, 1_000.0]
    assert moved.position_values is values and moved.derived is derived
    assert moved.matrix.toarray().tolist() == first.matrix.toarray().tolist()
