"""Repositories: rows in, domain objects out, and the diff of a `Book` written back.

Locks are taken in one fixed order everywhere (transfers by id, then accounts by id) so that
concurrent transactions queue instead of deadlocking.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
import sqlalchemy as sa
from opentelemetry import trace
from psycopg.rows import dict_row
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from holdfast import telemetry
from holdfast.adapters import tables as t
from holdfast.adapters.crypto import MetadataCipher, key_id_of
from holdfast.adapters.database import translate_driver_error
from holdfast.domain.accounts import Account, NormalBalance, Status
from holdfast.domain.errors import require
from holdfast.domain.transfers import Book, Leg, State, Transfer


def now(connection: Connection) -> datetime:
    """The database's clock: one clock for every function instance."""
    value: datetime = connection.execute(sa.text("SELECT now()")).scalar_one()
    return value


# -- accounts ---------------------------------------------------------------------------


def _open(m: Mapping[Any, Any], cipher: MetadataCipher) -> dict[str, Any]:
    """The row's metadata: sealed (AES-GCM) for every row written since migration 0003."""
    if m["metadata_sealed"] is None:
        legacy: dict[str, Any] = m["metadata"]
        return legacy
    return cipher.open(bytes(m["metadata_sealed"]), row_id=str(m["id"]))


def _sealed(cipher: MetadataCipher, row_id: UUID, metadata: dict[str, Any]) -> dict[str, Any]:
    """Column values that store `metadata` sealed, with the plaintext column left empty."""
    sealed = cipher.seal(metadata, row_id=str(row_id))
    return {"metadata": {}, "metadata_sealed": sealed, "metadata_key_id": key_id_of(sealed)}


def _account_with_lapsed(m: Mapping[Any, Any], cipher: MetadataCipher) -> Account:
    """An account read with `_ACCOUNTS_WITH_LAPSED`: with its holds past expiry not swept."""
    account = _account(m, cipher)
    account.debits_lapsed = int(m["debits_lapsed"])
    account.credits_lapsed = int(m["credits_lapsed"])
    return account


def _account(m: Mapping[Any, Any], cipher: MetadataCipher) -> Account:
    account = Account(
        id=m["id"],
        currency=m["currency"],
        owner=m["owner"],
        normal_balance=NormalBalance(m["normal_balance"]),
        overdraft_limit=m["overdraft_limit"],
        metadata=_open(m, cipher),
        created_at=m["created_at"],
        status=Status(m["status"]),
        debits_posted=m["debits_posted"],
        credits_posted=m["credits_posted"],
        debits_reserved=m["debits_reserved"],
        credits_reserved=m["credits_reserved"],
    )
    return account


# Plain SQL on the hot path: the statement text is fixed, so there is nothing to build or
# cache per call (a Core select costs a cache-key walk each time), and both databases run it.
_ACCOUNTS_WITH_LAPSED = (
    "SELECT accounts.*, "
    "(SELECT coalesce(sum(h.amount), 0) FROM holds h WHERE h.account_id = accounts.id "
    " AND h.direction = 'debit' AND h.expires_at <= now()) AS debits_lapsed, "
    "(SELECT coalesce(sum(h.amount), 0) FROM holds h WHERE h.account_id = accounts.id "
    " AND h.direction = 'credit' AND h.expires_at <= now()) AS credits_lapsed, "
    "now() AS now_ "
    "FROM accounts WHERE "
)
_ACCOUNTS = _ACCOUNTS_WITH_LAPSED + "accounts.id = ANY(CAST(:ids AS UUID[])) ORDER BY accounts.id"
READ_ACCOUNTS = sa.text(_ACCOUNTS)
LOCK_ACCOUNTS = sa.text(_ACCOUNTS + " FOR UPDATE OF accounts")
_TRANSFERS = "SELECT * FROM transfers WHERE id = ANY(CAST(:ids AS UUID[])) ORDER BY id"
READ_TRANSFERS = sa.text(_TRANSFERS)
LOCK_TRANSFERS = sa.text(_TRANSFERS + " FOR UPDATE")

# `lock_book`'s statements, for the driver (psycopg placeholders). The accounts are those
# named (a reserve's legs) and those of every leg of the transfers locked just before, read
# from their stored legs: both locks then go out in one round trip, in the usual order. The
# ids are gathered first (`ARRAY(...)`, computed once) so that the accounts are still found
# by their key: a plan that scanned the table would lock all of it against writers
# (PostgreSQL's SERIALIZABLE predicate locks).
_LEGS_OF = (
    "SELECT CAST(leg ->> '{side}_account_id' AS UUID) FROM (SELECT jsonb_array_elements(legs) "
    "AS leg FROM transfers WHERE id = ANY(%(transfers)s)) AS {side}s"
)
LOCK_BOOK = (
    "SELECT * FROM transfers WHERE id = ANY(%(transfers)s) ORDER BY id FOR UPDATE",
    "SELECT now() AS now_",
    _ACCOUNTS_WITH_LAPSED
    + "accounts.id = ANY(ARRAY(SELECT unnest(CAST(%(accounts)s AS UUID[])) UNION "
    + _LEGS_OF.format(side="debit")
    + " UNION "
    + _LEGS_OF.format(side="credit")
    + ")) ORDER BY accounts.id FOR UPDATE OF accounts",
)


@contextlib.contextmanager
def _pipeline(driver: psycopg.Connection[Any]) -> Iterator[None]:
    """The pipeline the transaction already runs in (`Database.run(pipelined=True)`: its
    statements go out with the commit), or one of its own (sent when the block ends)."""
    if driver.info.pipeline_status != psycopg.pq.PipelineStatus.OFF:
        yield
        return
    with driver.pipeline():
        yield


def _pipeline_span(statements: Sequence[str]) -> trace.Span:
    span = telemetry.tracer().start_span("db.pipeline")
    span.set_attribute("db.system", "postgresql")
    span.set_attribute("db.operation.batch.size", len(statements))
    span.set_attribute("db.statement", "; ".join(statements))
    return span


def lock_book(
    connection: Connection,
    transfer_ids: Iterable[UUID],
    account_ids: Iterable[UUID],
    cipher: MetadataCipher,
) -> tuple[dict[UUID, Transfer], dict[UUID, Account], datetime]:
    """Lock the transfers (by id), then the accounts named and every account their legs
    touch (by id), and read the transaction's clock: one round trip, locks in the one order.

    Returns the transfers, the accounts (with their lapsed holds) and the database's `now()`.
    """
    params = {"transfers": sorted(set(transfer_ids)), "accounts": sorted(set(account_ids))}
    driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    with trace.use_span(_pipeline_span(LOCK_BOOK), end_on_exit=True):
        try:
            with _pipeline(driver):
                cursors = [driver.cursor(row_factory=dict_row) for _ in LOCK_BOOK]
                for cursor, sql in zip(cursors, LOCK_BOOK, strict=True):
                    cursor.execute(sql, params)
            transfer_rows, (clock,), account_rows = (c.fetchall() for c in cursors)
        except psycopg.Error as error:
            raise translate_driver_error(error) from error
    transfers = {row["id"]: _transfer(row, cipher) for row in transfer_rows}
    accounts = {row["id"]: _account_with_lapsed(row, cipher) for row in account_rows}
    require(
        all(a in accounts for x in transfers.values() for a in x.account_ids()),
        "lock_book locks every account of every transfer it locks",
    )
    at: datetime = clock["now_"]
    return transfers, accounts, at


def load_accounts(
    connection: Connection, ids: Iterable[UUID], *, lock: bool, cipher: MetadataCipher
) -> tuple[dict[UUID, Account], datetime | None]:
    """Accounts by id with their lapsed holds, locked FOR UPDATE in id order, in one query.

    Also returns the transaction's `now()` (None when no account matched), which saves a
    round trip on the hot path.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return {}, None
    query = LOCK_ACCOUNTS if lock else READ_ACCOUNTS
    accounts: dict[UUID, Account] = {}
    at = None
    for row in connection.execute(query, {"ids": wanted}):
        account = _account_with_lapsed(row._mapping, cipher)
        accounts[account.id] = account
        at = row.now_
    return accounts, at


def get_account(connection: Connection, account_id: UUID, cipher: MetadataCipher) -> Account | None:
    return load_accounts(connection, [account_id], lock=False, cipher=cipher)[0].get(account_id)


def insert_account(connection: Connection, account: Account, cipher: MetadataCipher) -> None:
    connection.execute(
        t.accounts.insert().values(
            id=account.id,
            currency=account.currency,
            owner=account.owner,
            status=str(account.status),
            normal_balance=str(account.normal_balance),
            overdraft_limit=account.overdraft_limit,
            debits_posted=0,
            credits_posted=0,
            debits_reserved=0,
            credits_reserved=0,
            created_at=account.created_at,
            updated_at=account.created_at,
            **_sealed(cipher, account.id, account.metadata),
        )
    )


def save_accounts(connection: Connection, accounts: Sequence[Account], at: datetime) -> None:
    writes = Writes()
    _queue_accounts(writes, accounts, at)
    writes.flush(connection)


def _queue_accounts(writes: Writes, accounts: Sequence[Account], at: datetime) -> None:
    writes.execute(
        "UPDATE accounts SET status = %(status)s, debits_posted = %(debits_posted)s, "
        "credits_posted = %(credits_posted)s, debits_reserved = %(debits_reserved)s, "
        "credits_reserved = %(credits_reserved)s, updated_at = %(at)s WHERE id = %(id)s",
        [
            {
                "id": a.id,
                "status": str(a.status),
                "debits_posted": a.debits_posted,
                "credits_posted": a.credits_posted,
                "debits_reserved": a.debits_reserved,
                "credits_reserved": a.credits_reserved,
                "at": at,
            }
            for a in accounts
        ],
    )


# -- transfers --------------------------------------------------------------------------


def _legs_json(legs: Sequence[Leg]) -> list[dict[str, Any]]:
    return [
        {
            "debit_account_id": str(leg.debit_account_id),
            "credit_account_id": str(leg.credit_account_id),
            "amount": leg.amount,
            "currency": leg.in_currency(),
        }
        for leg in legs
    ]


def _legs(row_currency: str | None, legs: list[dict[str, Any]]) -> tuple[Leg, ...]:
    """Legs as stored. Rows written before multi-currency transfers keep the currency only on
    the transfer (`transfers.currency`, then never NULL for a transfer with legs)."""
    loaded = tuple(
        Leg(
            UUID(leg["debit_account_id"]),
            UUID(leg["credit_account_id"]),
            leg["amount"],
            leg.get("currency") or row_currency,
        )
        for leg in legs
    )
    require(all(leg.currency for leg in loaded), "every stored leg has a currency")
    return loaded


def _transfer(m: Mapping[Any, Any], cipher: MetadataCipher) -> Transfer:
    return Transfer(
        id=m["id"],
        state=State(m["state"]),
        currency=m["currency"],
        legs=_legs(m["currency"], m["legs"]),
        timeout_s=m["timeout_s"],
        immediate=m["immediate"],
        metadata=_open(m, cipher),
        created_by=m["created_by"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        request=m["request"],
        confirmed_amount=m["confirmed_amount"],
        resolved_at=m["resolved_at"],
    )


def load_transfers(
    connection: Connection, ids: Iterable[UUID], *, lock: bool, cipher: MetadataCipher
) -> dict[UUID, Transfer]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = LOCK_TRANSFERS if lock else READ_TRANSFERS
    rows = connection.execute(query, {"ids": wanted})
    return {row.id: _transfer(row._mapping, cipher) for row in rows}


def lapsed_transfer_ids(connection: Connection, at: datetime, limit: int) -> list[UUID]:
    """Reservations whose expiry has passed, oldest first (the sweep's next batch)."""
    rows = connection.execute(
        sa.select(t.transfers.c.id)
        .where(t.transfers.c.state == "reserved", t.transfers.c.expires_at <= at)
        .order_by(t.transfers.c.expires_at)
        .limit(limit)
    )
    return [row.id for row in rows]


def lapsed_count(connection: Connection) -> int:
    """Reservations past their expiry that no sweep has moved yet (the alert's gauge)."""
    count: int = connection.execute(
        sa.select(sa.func.count())
        .select_from(t.transfers)
        .where(t.transfers.c.state == "reserved", t.transfers.c.expires_at <= sa.func.now())
    ).scalar_one()
    return count


def list_transfers(
    connection: Connection,
    *,
    at: datetime,
    account_ids: Sequence[UUID] | None,
    created_by: str | None,
    state: State | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
    cipher: MetadataCipher,
) -> list[Transfer]:
    """A page in (created_at, id) order, filtered by account, creator and effective state."""
    if account_ids is not None:
        return _list_account_transfers(
            connection,
            at=at,
            account_ids=account_ids,
            state=state,
            after=after,
            limit=limit,
            cipher=cipher,
        )
    query = sa.select(t.transfers)
    filters: list[sa.ColumnElement[bool]] = []
    if created_by is not None:
        filters.append(t.transfers.c.created_by == created_by)
    if state is State.EXPIRED:
        filters.append(
            sa.or_(
                t.transfers.c.state == "expired",
                sa.and_(t.transfers.c.state == "reserved", t.transfers.c.expires_at <= at),
            )
        )
    elif state is State.RESERVED:
        filters.append(sa.and_(t.transfers.c.state == "reserved", t.transfers.c.expires_at > at))
    elif state is not None:
        filters.append(t.transfers.c.state == str(state))
    if after is not None:
        filters.append(
            sa.tuple_(t.transfers.c.created_at, t.transfers.c.id)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    query = query.where(*filters).order_by(t.transfers.c.created_at, t.transfers.c.id).limit(limit)
    return [_transfer(row._mapping, cipher) for row in connection.execute(query)]


# Effective state (a reservation past its expiry reads as expired), on transfers as `y`.
_STATE_FILTERS = {
    None: "",
    State.EXPIRED: "AND (y.state = 'expired' OR (y.state = 'reserved' AND y.expires_at <= :at))",
    State.RESERVED: "AND y.state = 'reserved' AND y.expires_at > :at",
}


def _list_account_transfers(
    connection: Connection,
    *,
    at: datetime,
    account_ids: Sequence[UUID],
    state: State | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
    cipher: MetadataCipher,
) -> list[Transfer]:
    """The accounts' page from the index `account_transfers (account_id, created_at,
    transfer_id)`: for each account, its first `limit` matching transfers after the cursor in
    index order (a nested loop that stops at `limit`), then the first `limit` of their union.
    Its cost is `limit` rows per account (plus those a state filter skips), not history."""
    state_filter = _STATE_FILTERS.get(state, "AND y.state = :state")
    cursor = (
        "AND (l.created_at, l.transfer_id) > (CAST(:after_at AS TIMESTAMPTZ), "
        "CAST(:after_id AS UUID))"
        if after is not None
        else ""
    )
    query = sa.text(
        "SELECT x.* FROM (SELECT DISTINCT p.created_at, p.transfer_id "
        "FROM unnest(CAST(:accounts AS UUID[])) AS a (id) CROSS JOIN LATERAL ("
        "SELECT l.created_at, l.transfer_id FROM account_transfers l "
        "JOIN transfers y ON y.id = l.transfer_id "
        f"WHERE l.account_id = a.id {cursor} {state_filter} "
        "ORDER BY l.created_at, l.transfer_id LIMIT :limit) p "
        "ORDER BY p.created_at, p.transfer_id LIMIT :limit) page "
        "JOIN transfers x ON x.id = page.transfer_id ORDER BY x.created_at, x.id"
    )
    rows = connection.execute(
        query,
        {
            "accounts": list(account_ids),
            "at": at,
            "state": str(state) if state is not None else None,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return [_transfer(row._mapping, cipher) for row in rows]


class Writes:
    """The writes of one unit of work, sent together: one psycopg pipeline, one round trip.

    Why: a transfer's writes touch six tables; sent one by one they cost a round trip each,
    and the database must wait for the client between them. Inserts of many rows are one
    statement whose text never changes (`INSERT ... SELECT ... FROM unnest(arrays)`, which
    PostgreSQL and CockroachDB both run): prepared once, whatever the number of rows.
    Errors surface at `flush`, sorted into transient or not like every other database error;
    inside a pipelined transaction (`Database.run(pipelined=True)`) the writes go out with
    its COMMIT instead, and their errors surface there.
    """

    def __init__(self) -> None:
        self.statements: list[tuple[str, dict[str, Any] | list[dict[str, Any]]]] = []

    def insert(
        self,
        connection: Connection,
        table: sa.Table,
        rows: Sequence[dict[str, Any]],
        *,
        skip_existing: bool = False,
    ) -> None:
        if not rows:
            return
        columns = tuple(rows[0])
        params: dict[str, Any] = {}
        for index, name in enumerate(columns):
            values = [row[name] for row in rows]
            if isinstance(table.c[name].type, JSONB):
                values = [None if v is None else json.dumps(v) for v in values]
            params[f"c{index}"] = values
        self.statements.append((_insert_sql(connection, table, columns, skip_existing), params))

    def execute(self, sql: str, params: dict[str, Any] | list[dict[str, Any]]) -> None:
        """A statement with psycopg placeholders (`%(name)s`); a list of params runs it once
        per item."""
        if params:
            self.statements.append((sql, params))

    def flush(self, connection: Connection) -> None:
        if not self.statements:
            return
        driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
        span = _pipeline_span([sql for sql, _ in self.statements])
        # Not closed here: inside the transaction's own pipeline, its results arrive later.
        cursor = driver.cursor()
        try:
            with trace.use_span(span, end_on_exit=True), _pipeline(driver):
                for sql, params in self.statements:
                    if isinstance(params, list):
                        cursor.executemany(sql, params)
                    else:
                        cursor.execute(sql, params)
        except psycopg.Error as error:
            raise translate_driver_error(error) from error
        finally:
            self.statements.clear()


def insert_rows(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_existing: bool = False,
) -> None:
    """Insert many rows at once (see `Writes`)."""
    writes = Writes()
    writes.insert(connection, table, rows, skip_existing=skip_existing)
    writes.flush(connection)


_insert_statements: dict[tuple[str, str, tuple[str, ...], bool], str] = {}


def _insert_sql(
    connection: Connection, table: sa.Table, columns: tuple[str, ...], skip_existing: bool
) -> str:
    key = (connection.dialect.name, table.name, columns, skip_existing)
    if key not in _insert_statements:
        # `%b`: each array goes in PostgreSQL's binary format. As text (`%s`) psycopg quotes
        # every element in Python: 25x the CPU for a 500-row batch (docs/architecture.md).
        arrays, selected = [], []
        for index, name in enumerate(columns):
            column_type = table.c[name].type
            if isinstance(column_type, JSONB):
                arrays.append(f"CAST(%(c{index})b AS TEXT[])")
                selected.append(f"CAST(u.{name} AS JSONB)")
            else:
                element = column_type.compile(dialect=connection.dialect)
                arrays.append(f"CAST(%(c{index})b AS {element}[])")
                selected.append(f"u.{name}")
        names = ", ".join(columns)
        conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
        _insert_statements[key] = (
            f"INSERT INTO {table.name} ({names}) SELECT {', '.join(selected)} "
            f"FROM unnest({', '.join(arrays)}) AS u({names}){conflict}"
        )
    return _insert_statements[key]


def save_book(
    connection: Connection,
    book: Book,
    cipher: MetadataCipher,
    writes: Writes | None = None,
) -> None:
    """Write everything a Book changed (with `writes` already queued) in one pipeline."""
    writes = writes or Writes()
    new = [book.transfers[i] for i in sorted(book.new_transfers)]
    changed = [book.transfers[i] for i in sorted(book.changed_transfers - book.new_transfers)]
    writes.insert(
        connection,
        t.transfers,
        [
            {
                "id": x.id,
                "state": str(x.state),
                "currency": x.currency,
                "legs": _legs_json(x.legs),
                "amount": x.amount,
                "timeout_s": x.timeout_s,
                "immediate": x.immediate,
                **_sealed(cipher, x.id, x.metadata),
                "request": x.request,
                "created_by": x.created_by,
                "created_at": x.created_at,
                "expires_at": x.expires_at,
                "confirmed_amount": x.confirmed_amount,
                "resolved_at": x.resolved_at,
            }
            for x in new
        ],
    )
    writes.insert(
        connection,
        t.account_transfers,
        [
            {"account_id": a, "created_at": x.created_at, "transfer_id": x.id}
            for x in new
            for a in sorted(x.account_ids())
        ],
    )
    writes.execute(
        "UPDATE transfers SET state = %(state)s, confirmed_amount = %(confirmed_amount)s, "
        "resolved_at = %(resolved_at)s WHERE id = %(id)s",
        [
            {
                "id": x.id,
                "state": str(x.state),
                "confirmed_amount": x.confirmed_amount,
                "resolved_at": x.resolved_at,
            }
            for x in changed
        ],
    )
    _save_holds(connection, book, writes)
    writes.insert(
        connection,
        t.ledger_entries,
        [
            {
                "id": e.id,
                "transfer_id": e.transfer_id,
                "leg": e.leg,
                "direction": str(e.direction),
                "account_id": e.account_id,
                "amount": e.amount,
                "currency": e.currency,
                "posted_at": e.posted_at,
            }
            for e in book.entries
        ],
    )
    writes.insert(
        connection,
        t.ledger_unsequenced,
        [{"entry_id": e.id, "posted_at": e.posted_at} for e in book.entries],
    )
    _queue_accounts(writes, [book.accounts[i] for i in sorted(book.changed_accounts)], book.now)
    writes.flush(connection)


def _save_holds(connection: Connection, book: Book, writes: Writes) -> None:
    released = set(book.released_holds)
    created = [i for i in book.new_holds if i not in released]
    gone = sorted(released - set(book.new_holds))
    if gone:
        writes.execute("DELETE FROM holds WHERE transfer_id = ANY(%(ids)s)", {"ids": gone})
    rows: list[dict[str, Any]] = []
    for transfer_id in created:
        transfer = book.transfers[transfer_id]
        require(transfer.expires_at is not None, "a hold needs an expiry")
        per_account: dict[tuple[UUID, str], int] = {}
        for leg in transfer.legs:
            for key in ((leg.debit_account_id, "debit"), (leg.credit_account_id, "credit")):
                per_account[key] = per_account.get(key, 0) + leg.amount
        rows.extend(
            {
                "transfer_id": transfer_id,
                "account_id": account_id,
                "direction": direction,
                "amount": amount,
                "expires_at": transfer.expires_at,
            }
            for (account_id, direction), amount in per_account.items()
        )
    writes.insert(connection, t.holds, rows)


def owned_account_ids(connection: Connection, owner: str) -> list[UUID]:
    rows = connection.execute(
        sa.select(t.accounts.c.id).where(t.accounts.c.owner == owner).limit(10_000)
    )
    return [row.id for row in rows]


# -- key rotation -----------------------------------------------------------------------

SEALED_TABLES = {"accounts": t.accounts, "transfers": t.transfers}


def reseal_batch(connection: Connection, table: str, cipher: MetadataCipher, limit: int) -> int:
    """Re-seal up to `limit` rows not sealed with the active key (legacy plaintext included)."""
    target = SEALED_TABLES[table]
    rows = connection.execute(
        sa.select(target.c.id, target.c.metadata, target.c.metadata_sealed)
        .where(target.c.metadata_key_id.is_distinct_from(cipher.active))
        .order_by(target.c.id)
        .limit(limit)
        .with_for_update()
    ).fetchall()
    for row in rows:
        connection.execute(
            target.update()
            .where(target.c.id == row.id)
            .values(**_sealed(cipher, row.id, _open(row._mapping, cipher)))
        )
    return len(rows)
