"""Helpers for integration tests: open accounts, fund them, check the invariants."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from holdfast.adapters.database import Database
from tests.conftest import Api

OPS = {
    "sub": "ops",
    "scope": "accounts:read accounts:write transfers:read transfers:write operator",
}


def open_account(api: Api, *, owner: str = "alice", **fields: Any) -> str:
    account_id = str(uuid.uuid4())
    body = {"id": account_id, "currency": "EUR", "owner": owner, **fields}
    response = api.call("POST", "/v1/accounts", body, **OPS)
    assert response.status_code == 201, response.json
    return account_id


def funded(
    accounts: Api, transfers: Api, amount: int, *, owner: str = "alice", **fields: Any
) -> str:
    """A customer account holding `amount`, paid in from an unlimited funding account."""
    source = open_account(accounts, owner="bank", overdraft_limit=None)
    account = open_account(accounts, owner=owner, **fields)
    if amount:
        pay(transfers, source, account, amount)
    return account


def pay(transfers: Api, debit: str, credit: str, amount: int) -> dict[str, Any]:
    body = {
        "id": str(uuid.uuid4()),
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "EUR",
        "immediate": True,
    }
    response = transfers.call("POST", "/v1/transfers", body, **OPS)
    assert response.status_code == 201, response.json
    return dict(response.json)


def lapse(db: Database, transfer_id: str | uuid.UUID) -> None:
    """The clock passes the reservation's `expires_at`: moved just into the past, in the
    transfer and its holds, so expiry is tested without sleeping (and without racing a
    busy machine's clock)."""
    with db.engine.begin() as c:
        for table, key in (("transfers", "id"), ("holds", "transfer_id")):
            c.execute(
                sa.text(
                    f"UPDATE {table} SET expires_at = now() - interval '1 millisecond' "
                    f"WHERE {key} = :i"
                ),
                {"i": str(transfer_id)},
            )


def check_invariants(db: Database) -> None:
    """What must hold after any sequence of operations, read straight from the tables."""
    with db.engine.connect() as c:
        # Per currency, the posted balances sum to zero (every posting balanced).
        for currency, debits, credits in c.execute(
            sa.text(
                "SELECT currency, sum(debits_posted), sum(credits_posted) FROM accounts GROUP BY currency"
            )
        ):
            assert debits == credits, f"{currency}: debits {debits} != credits {credits}"
        # Every confirmed transfer has one debit and one credit entry of equal amount per leg.
        rows = c.execute(
            sa.text(
                "SELECT t.id, t.confirmed_amount, "
                " coalesce(sum(e.amount) FILTER (WHERE e.direction = 'debit'), 0), "
                " coalesce(sum(e.amount) FILTER (WHERE e.direction = 'credit'), 0), count(e.id), "
                " jsonb_array_length(t.legs) "
                "FROM transfers t LEFT JOIN ledger_entries e ON e.transfer_id = t.id "
                "WHERE t.state = 'confirmed' GROUP BY t.id"
            )
        )
        for transfer_id, confirmed, debits, credits, count, legs in rows:
            assert debits == credits == confirmed, transfer_id
            assert count == 2 * legs, transfer_id
        # Per leg: one debit and one credit of one amount in one currency, that of both
        # accounts (legs of one transfer may differ in currency; no leg mixes two).
        unbalanced_legs = c.execute(
            sa.text(
                "SELECT e.transfer_id, e.leg FROM ledger_entries e "
                "JOIN accounts a ON a.id = e.account_id GROUP BY e.transfer_id, e.leg HAVING "
                "count(*) <> 2 OR count(DISTINCT e.direction) <> 2 OR "
                "count(DISTINCT e.currency) <> 1 OR count(DISTINCT a.currency) <> 1 OR "
                "min(e.currency) <> min(a.currency) OR count(DISTINCT e.amount) <> 1"
            )
        ).fetchall()
        assert unbalanced_legs == []
        unposted = c.execute(
            sa.text(
                "SELECT count(*) FROM ledger_entries e JOIN transfers t ON t.id = e.transfer_id "
                "WHERE t.state <> 'confirmed'"
            )
        ).scalar()
        assert unposted == 0
        # Counters equal the sum of the entries.
        mismatched = c.execute(
            sa.text(
                "SELECT a.id FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id "
                "GROUP BY a.id, a.debits_posted, a.credits_posted HAVING "
                "a.debits_posted <> coalesce(sum(e.amount) FILTER (WHERE e.direction = 'debit'), 0) OR "
                "a.credits_posted <> coalesce(sum(e.amount) FILTER (WHERE e.direction = 'credit'), 0)"
            )
        ).fetchall()
        assert mismatched == []
        # A hold exists exactly while its transfer is reserved; reserved counters match holds.
        orphans = c.execute(
            sa.text(
                "SELECT count(*) FROM holds h JOIN transfers t ON t.id = h.transfer_id "
                "WHERE t.state <> 'reserved'"
            )
        ).scalar()
        assert orphans == 0
        missing = c.execute(
            sa.text(
                "SELECT count(*) FROM transfers t WHERE t.state = 'reserved' "
                "AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.transfer_id = t.id)"
            )
        ).scalar()
        assert missing == 0
        wrong = c.execute(
            sa.text(
                "SELECT a.id FROM accounts a LEFT JOIN holds h ON h.account_id = a.id "
                "GROUP BY a.id, a.debits_reserved, a.credits_reserved HAVING "
                "a.debits_reserved <> coalesce(sum(h.amount) FILTER (WHERE h.direction = 'debit'), 0) OR "
                "a.credits_reserved <> coalesce(sum(h.amount) FILTER (WHERE h.direction = 'credit'), 0)"
            )
        ).fetchall()
        assert wrong == []
        # No account is below its limit, counting only holds that have not lapsed.
        below = c.execute(
            sa.text(
                "SELECT a.id FROM accounts a WHERE a.overdraft_limit IS NOT NULL AND "
                "CASE a.normal_balance WHEN 'credit' THEN a.credits_posted - a.debits_posted - "
                " (SELECT coalesce(sum(amount), 0) FROM holds h WHERE h.account_id = a.id "
                "  AND h.direction = 'debit' AND h.expires_at > now()) "
                "ELSE a.debits_posted - a.credits_posted - "
                " (SELECT coalesce(sum(amount), 0) FROM holds h WHERE h.account_id = a.id "
                "  AND h.direction = 'credit' AND h.expires_at > now()) END < -a.overdraft_limit"
            )
        ).fetchall()
        assert below == []
