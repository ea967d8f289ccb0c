"""The built book's touched rows: the holders of the moved underlyings and the updated accounts."""

from __future__ import annotations

import itertools
import random

from pipelines.engine.account_book import HOLDING_SETS, AccountBook

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
