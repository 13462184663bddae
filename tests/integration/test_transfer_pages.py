"""Transfer pages read from the account index: each transfer once, in (created_at, id) order,
whatever the filters, for one account or all of a customer's accounts, page after page."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from holdfast.adapters.database import Database
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM, Actor
from holdfast.domain.transfers import State, Transfer
from holdfast.services import accounts, transfers
from tests.integration.ledger import support

ALICE = Actor(sub="alice", scopes=frozenset({"transfers:read"}))


def all_pages(
    db: Database, actor: Actor, account_id: UUID | None, state: State | None, limit: int
) -> list[Transfer]:
    found: list[Transfer] = []
    after: tuple[datetime, UUID] | None = None
    while True:
        page, _ = transfers.list_transfers(
            db, actor, account_id=account_id, state=state, after=after, limit=limit
        )
        found.extend(page)
        if len(page) < limit:
            return found
        after = (page[-1].created_at, page[-1].id)


def test_pages_list_each_transfer_once_in_order(db: Database) -> None:
    mine = [uuid.uuid4(), uuid.uuid4()]
    for account_id in mine:
        accounts.open_account(
            db, OpenAccount(account_id, "EUR", "alice", NormalBalance.CREDIT, None, {}), SYSTEM
        )
    other, third = support.open_accounts(db, 2)
    commands = []
    for i in range(23):  # between my two accounts, to and from others, and not mine at all
        debit, credit = [(mine[0], mine[1]), (mine[1], other), (other, mine[0]), (other, third)][
            i % 4
        ]
        commands.append(support.reserve([(debit, credit, 1 + i)], immediate=i % 3 != 0))
    for start in range(0, len(commands), 5):  # several transactions: several created_at
        support.pay(db, commands[start : start + 5])
    by_id = {c.id: c for c in commands}

    def expected(accounts: set[UUID], state: State | None) -> list[UUID]:
        listed = [
            x
            for x in all_pages(db, SYSTEM, None, None, 1000)
            if x.id in by_id and accounts & set(x.account_ids())
        ]
        return [x.id for x in listed if state is None or x.state is state]

    for state in (None, State.CONFIRMED, State.RESERVED):
        for limit in (1, 4, 100):
            mine_all = [x.id for x in all_pages(db, ALICE, None, state, limit)]
            assert mine_all == expected(set(mine), state)
            assert len(mine_all) == len(set(mine_all))
            one = [x.id for x in all_pages(db, SYSTEM, mine[0], state, limit)]
            assert one == expected({mine[0]}, state)
    listed = all_pages(db, ALICE, None, None, 3)
    assert [(x.created_at, x.id) for x in listed] == sorted((x.created_at, x.id) for x in listed)
