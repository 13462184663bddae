"""SQL of the sealed ledger: the sealer's queue and writes, and the auditor's reads.

Every ledger transaction reads at snapshot isolation (`snapshot`): what it reads is either
immutable (entries, sealed order, checkpoints) or guarded by a unique key (the checkpoint
number, seq, entry id), so SERIALIZABLE's predicate locks would protect nothing here, while
they would put a read-write dependency from the ledger into every concurrent confirm that
inserts an entry, and make those confirms the victims of serialization failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from holdfast import limits
from holdfast.adapters import tables as t
from holdfast.domain.accounts import Direction, NormalBalance
from holdfast.domain.errors import InvariantViolation
from holdfast.domain.ledger import (
    Checkpoint,
    LedgerEntry,
    Sealed,
    entry_json_of,
    time_of_database_text,
)
from holdfast.domain.transfers import Entry, entry_id

metadata = sa.MetaData()
ledger_checkpoints = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("number", sa.BigInteger, primary_key=True),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("entry_count", sa.Integer, nullable=False),
    sa.Column("entries_root", sa.Text, nullable=False),
    sa.Column("previous_digest", sa.Text, nullable=False),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
)
ledger_sequence = sa.Table(
    "ledger_sequence",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("entry_id", sa.Uuid, nullable=False),
    sa.Column("checkpoint", sa.BigInteger, nullable=False),
    sa.Column("transfer_id", sa.Uuid, nullable=False),
    sa.Column("account_id", sa.Uuid, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
)
ledger_keys = sa.Table(
    "ledger_keys",
    metadata,
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=False),
)

# A second sealer that lost the race for the same checkpoint or entries hits one of these.
RACE_CONSTRAINTS = frozenset(
    {
        "ledger_checkpoints_pkey",
        "ledger_sequence_pkey",
        "ledger_sequence_entry_id_key",
        "ledger_seal_points_pkey",
    }
)

ENTRY_COLUMNS = "e.transfer_id, e.leg, e.direction, e.account_id, e.amount, e.currency, e.posted_at"


def snapshot(connection: Connection, *, read_only: bool) -> None:
    """Make this transaction a snapshot read (must be its first statement; see module doc).

    CockroachDB runs it as SERIALIZABLE unless REPEATABLE READ is enabled there: its
    timestamp-ordered reads push concurrent writers instead of aborting them.
    """
    mode = ", READ ONLY" if read_only else ""
    connection.execute(sa.text(f"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ{mode}"))


def _checkpoint(row: Row[Any]) -> Checkpoint:
    m = row._mapping
    return Checkpoint(
        number=m["number"],
        first_seq=m["first_seq"],
        last_seq=m["last_seq"],
        entry_count=m["entry_count"],
        entries_root=m["entries_root"],
        previous_digest=m["previous_digest"],
        digest=m["digest"],
        key_id=m["key_id"],
        created_at=m["created_at"],
        signature=m["signature"],
    )


def _ledger_entry(row: Row[Any]) -> LedgerEntry:
    m = row._mapping
    return LedgerEntry(
        seq=m["seq"],
        transfer_id=m["transfer_id"],
        leg=m["leg"],
        direction=Direction(m["direction"]),
        account_id=m["account_id"],
        amount=m["amount"],
        currency=m["currency"],
        posted_at=m["posted_at"],
    )


# -- sealing --------------------------------------------------------------------------------


def latest_checkpoint(connection: Connection) -> Checkpoint | None:
    row = connection.execute(
        sa.select(ledger_checkpoints).order_by(ledger_checkpoints.c.number.desc()).limit(1)
    ).first()
    return _checkpoint(row) if row else None


def queued_batch(connection: Connection, limit: int) -> list[Entry]:
    """The first `limit` queued entries in batch order, completed to the end of the last
    transfer they touch (a transfer's entries are adjacent in this order, and at most
    2 * transfer_legs_max), so that no transfer is split between two checkpoints."""
    rows = connection.execute(
        sa.text(
            f"SELECT e.id, {ENTRY_COLUMNS} FROM ledger_unsequenced q "
            "JOIN ledger_entries e ON e.id = q.entry_id "
            "ORDER BY q.posted_at, e.transfer_id, e.leg, e.direction LIMIT :rows"
        ),
        {"rows": limit + 2 * limits.transfer_legs_max - 1},
    ).all()
    if len(rows) > limit:
        last = rows[limit - 1].transfer_id
        end = limit
        while end < len(rows) and rows[end].transfer_id == last:
            end += 1
        rows = rows[:end]
    return [
        Entry(
            id=row.id,
            transfer_id=row.transfer_id,
            leg=row.leg,
            direction=Direction(row.direction),
            account_id=row.account_id,
            amount=row.amount,
            currency=row.currency,
            posted_at=row.posted_at,
        )
        for row in rows
    ]


def insert_sealed(connection: Connection, sealed: Sealed) -> None:
    """The checkpoint first: a sealer that lost the race fails before writing anything else."""
    checkpoint = sealed.checkpoint
    connection.execute(
        ledger_checkpoints.insert().values(
            number=checkpoint.number,
            first_seq=checkpoint.first_seq,
            last_seq=checkpoint.last_seq,
            entry_count=checkpoint.entry_count,
            entries_root=checkpoint.entries_root,
            previous_digest=checkpoint.previous_digest,
            digest=checkpoint.digest,
            key_id=checkpoint.key_id,
            created_at=checkpoint.created_at,
            signature=checkpoint.signature,
        )
    )
    ids = [entry_id(e.transfer_id, e.leg, e.direction) for e in sealed.entries]
    # One statement for the whole batch: arrays unnested into rows (PostgreSQL and CockroachDB).
    connection.execute(
        sa.text(
            "INSERT INTO ledger_sequence (seq, entry_id, checkpoint, transfer_id, account_id, "
            "leaf_hash) SELECT s, e, :checkpoint, t, a, l FROM unnest(CAST(:seqs AS BIGINT[]), "
            "CAST(:entry_ids AS UUID[]), CAST(:transfer_ids AS UUID[]), "
            "CAST(:account_ids AS UUID[]), CAST(:leaves AS BYTEA[])) AS x (s, e, t, a, l)"
        ),
        {
            "checkpoint": checkpoint.number,
            "seqs": [e.seq for e in sealed.entries],
            "entry_ids": ids,
            "transfer_ids": [e.transfer_id for e in sealed.entries],
            "account_ids": [e.account_id for e in sealed.entries],
            "leaves": list(sealed.leaves),
        },
    )
    connection.execute(
        sa.text("DELETE FROM ledger_unsequenced WHERE entry_id = ANY(CAST(:ids AS UUID[]))"),
        {"ids": ids},
    )


def queue_state(connection: Connection) -> tuple[int, datetime | None]:
    """How many entries wait to be sealed, and the posted_at of the oldest."""
    row = connection.execute(
        sa.text("SELECT count(*) AS n, min(posted_at) AS oldest FROM ledger_unsequenced")
    ).one()
    return int(row.n), row.oldest


def record_key(connection: Connection, key_id: str, public_pem: str, at: datetime) -> None:
    connection.execute(
        sa.text(
            "INSERT INTO ledger_keys (key_id, algorithm, public_key, first_used_at) "
            "VALUES (:key_id, 'Ed25519', :pem, :at) ON CONFLICT (key_id) DO NOTHING"
        ),
        {"key_id": key_id, "pem": public_pem, "at": at},
    )


# -- reads ----------------------------------------------------------------------------------


def list_entries(
    connection: Connection,
    *,
    account_id: UUID | None,
    transfer_id: UUID | None,
    after: int,
    limit: int,
) -> list[LedgerEntry]:
    """A page in ledger order. Filters use the copies in ledger_sequence (one index range)."""
    filters = ["s.seq > :after"]
    if account_id is not None:
        filters.append("s.account_id = :account_id")
    if transfer_id is not None:
        filters.append("s.transfer_id = :transfer_id")
    rows = connection.execute(
        sa.text(
            f"SELECT s.seq, {ENTRY_COLUMNS} FROM ledger_sequence s "
            "JOIN ledger_entries e ON e.id = s.entry_id "
            f"WHERE {' AND '.join(filters)} ORDER BY s.seq LIMIT :limit"
        ),
        {"after": after, "account_id": account_id, "transfer_id": transfer_id, "limit": limit},
    )
    return [_ledger_entry(row) for row in rows]


@dataclass(frozen=True, slots=True)
class SealedRow:
    """One row of the sealed order, with its entry if the entry is still there."""

    seq: int
    entry_id: UUID
    checkpoint: int
    transfer_id: UUID
    account_id: UUID
    leaf: bytes
    entry: LedgerEntry | None


def sealed_range(connection: Connection, first_seq: int, last_seq: int) -> list[SealedRow]:
    rows = connection.execute(
        sa.text(
            "SELECT s.seq, s.entry_id, s.checkpoint, s.transfer_id AS s_transfer_id, "
            "s.account_id AS s_account_id, s.leaf_hash, e.id AS found, "
            f"{ENTRY_COLUMNS} FROM ledger_sequence s "
            "LEFT JOIN ledger_entries e ON e.id = s.entry_id "
            "WHERE s.seq BETWEEN :first AND :last ORDER BY s.seq"
        ),
        {"first": first_seq, "last": last_seq},
    ).all()  # one fetchall: the driver converts the page's rows in one call, not per row
    return [
        SealedRow(
            seq=row.seq,
            entry_id=row.entry_id,
            checkpoint=row.checkpoint,
            transfer_id=row.s_transfer_id,
            account_id=row.s_account_id,
            leaf=bytes(row.leaf_hash),
            entry=_ledger_entry(row) if row.found is not None else None,
        )
        for row in rows
    ]


def proof_material(
    connection: Connection, seq: int
) -> tuple[LedgerEntry | None, Checkpoint, list[bytes]] | None:
    """For an inclusion proof of `seq`: its entry (None if the row is gone), the checkpoint
    that sealed it and that checkpoint's stored leaf hashes in seq order; None if unsealed.
    Primary-key lookups and one key range, whatever the size of the ledger."""
    row = connection.execute(
        sa.text(
            f"SELECT s.seq, s.checkpoint, e.id AS found, {ENTRY_COLUMNS} FROM ledger_sequence s "
            "LEFT JOIN ledger_entries e ON e.id = s.entry_id WHERE s.seq = :seq"
        ),
        {"seq": seq},
    ).first()
    if row is None:
        return None
    checkpoint = get_checkpoint(connection, row.checkpoint)
    if checkpoint is None:
        raise InvariantViolation(f"seq {seq} is sealed in checkpoint {row.checkpoint}, not found")
    # One value instead of thousands of rows: the leaf hashes (32 bytes each) concatenated.
    joined = connection.execute(
        sa.text(
            "SELECT string_agg(leaf_hash, ''::bytea ORDER BY seq) FROM ledger_sequence "
            "WHERE seq BETWEEN :first AND :last"
        ),
        {"first": checkpoint.first_seq, "last": checkpoint.last_seq},
    ).scalar_one()
    leaves = bytes(joined or b"")
    entry = _ledger_entry(row) if row.found is not None else None
    return entry, checkpoint, [leaves[i : i + 32] for i in range(0, len(leaves), 32)]


# One sealed row as the export reads it: seq, leaf, then its entry's columns as text where
# text is what the line needs (all None when the entry row is gone). `export_line` writes it.
ExportRow: TypeAlias = "sa.Row[tuple[Any, ...]]"


def export_rows(connection: Connection, first_seq: int, last_seq: int) -> list[ExportRow]:
    """`sealed_range` for the export: only what it writes, UUIDs and the time as text in UTC
    from the database (no UUID or datetime objects to build and print again). Each entry is
    fetched by its key (a lateral lookup; LIMIT 1 keeps PostgreSQL from turning it into a
    hash join that scans every entry for each page). The lines are written by the reader
    (`export_line`), so a page read ahead in another thread leaves that work to it."""
    rows: list[ExportRow] = list(
        connection.execute(
            sa.text(
                "SELECT s.seq, s.leaf_hash AS leaf, CAST(e.transfer_id AS TEXT), e.leg, "
                "e.direction, CAST(e.account_id AS TEXT), e.amount, e.currency, "
                "CAST(e.posted_at AT TIME ZONE 'UTC' AS TEXT) "
                "FROM ledger_sequence s LEFT JOIN LATERAL ("
                "SELECT x.transfer_id, x.leg, x.direction, x.account_id, x.amount, x.currency, "
                "x.posted_at FROM ledger_entries x WHERE x.id = s.entry_id LIMIT 1) AS e "
                "ON true WHERE s.seq BETWEEN :first AND :last ORDER BY s.seq"
            ),
            {"first": first_seq, "last": last_seq},
        )
    )
    return rows


def export_line(row: ExportRow) -> str | None:
    """The entry line of an `export_rows` row; None when its entry row is gone."""
    seq, _, transfer_id, leg, direction, account_id, amount, currency, posted_at = row
    if transfer_id is None:
        return None
    return entry_json_of(
        seq,
        transfer_id,
        leg,
        direction,
        account_id,
        amount,
        currency,
        time_of_database_text(posted_at),
    )


def list_checkpoints(connection: Connection, *, after: int, limit: int) -> list[Checkpoint]:
    rows = connection.execute(
        sa.select(ledger_checkpoints)
        .where(ledger_checkpoints.c.number > after)
        .order_by(ledger_checkpoints.c.number)
        .limit(limit)
    )
    return [_checkpoint(row) for row in rows]


def get_checkpoint(connection: Connection, number: int) -> Checkpoint | None:
    row = connection.execute(
        sa.select(ledger_checkpoints).where(ledger_checkpoints.c.number == number)
    ).first()
    return _checkpoint(row) if row else None


@dataclass(frozen=True, slots=True)
class AccountTerms:
    """What never changes about an account: enough to read its balance from entries."""

    currency: str
    normal_balance: NormalBalance
    created_at: datetime


def account_terms(connection: Connection, account_id: UUID) -> AccountTerms | None:
    row = connection.execute(
        sa.select(
            t.accounts.c.currency, t.accounts.c.normal_balance, t.accounts.c.created_at
        ).where(t.accounts.c.id == account_id)
    ).first()
    if row is None:
        return None
    return AccountTerms(row.currency, NormalBalance(row.normal_balance), row.created_at)


def posted_totals(
    connection: Connection, account_id: UUID, as_of: datetime
) -> dict[str, tuple[int, int]]:
    """Per direction: (sum of amounts, number of entries) posted up to `as_of`."""
    rows = connection.execute(
        sa.text(
            "SELECT direction, sum(amount) AS total, count(*) AS n FROM ledger_entries "
            "WHERE account_id = :account_id AND posted_at <= :as_of GROUP BY direction"
        ),
        {"account_id": account_id, "as_of": as_of},
    )
    return {row.direction: (int(row.total), int(row.n)) for row in rows}


def trial_totals(connection: Connection, as_of: datetime) -> dict[str, dict[str, int]]:
    """Per currency and direction, the sum of amounts posted up to `as_of`."""
    rows = connection.execute(
        sa.text(
            "SELECT currency, direction, sum(amount) AS total FROM ledger_entries "
            "WHERE posted_at <= :as_of GROUP BY currency, direction"
        ),
        {"as_of": as_of},
    )
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        totals.setdefault(row.currency, {})[row.direction] = int(row.total)
    return totals


def keys(connection: Connection) -> list[tuple[str, str, datetime]]:
    rows = connection.execute(
        sa.select(ledger_keys.c.key_id, ledger_keys.c.public_key, ledger_keys.c.first_used_at)
        .order_by(ledger_keys.c.first_used_at, ledger_keys.c.key_id)
        .limit(1_000)
    )
    return [(row.key_id, row.public_key, row.first_used_at) for row in rows]


# -- checks of the database itself -------------------------------------------------------------


def entries_neither_sealed_nor_queued(connection: Connection, limit: int) -> list[UUID]:
    rows = connection.execute(
        sa.text(
            "SELECT e.id FROM ledger_entries e WHERE NOT EXISTS "
            "(SELECT 1 FROM ledger_sequence s WHERE s.entry_id = e.id) AND NOT EXISTS "
            "(SELECT 1 FROM ledger_unsequenced q WHERE q.entry_id = e.id) ORDER BY e.id LIMIT :n"
        ),
        {"n": limit},
    )
    return [row.id for row in rows]


def queued_but_sealed_or_missing(connection: Connection, limit: int) -> list[UUID]:
    rows = connection.execute(
        sa.text(
            "SELECT q.entry_id FROM ledger_unsequenced q WHERE EXISTS "
            "(SELECT 1 FROM ledger_sequence s WHERE s.entry_id = q.entry_id) OR NOT EXISTS "
            "(SELECT 1 FROM ledger_entries e WHERE e.id = q.entry_id) ORDER BY q.entry_id LIMIT :n"
        ),
        {"n": limit},
    )
    return [row.entry_id for row in rows]


def sealed_rows_outside_their_checkpoint(connection: Connection, limit: int) -> list[int]:
    """Sequence rows that no checkpoint's range covers (or whose checkpoint is missing)."""
    rows = connection.execute(
        sa.text(
            "SELECT s.seq FROM ledger_sequence s WHERE NOT EXISTS (SELECT 1 FROM "
            "ledger_checkpoints c WHERE c.number = s.checkpoint "
            "AND s.seq BETWEEN c.first_seq AND c.last_seq) ORDER BY s.seq LIMIT :n"
        ),
        {"n": limit},
    )
    return [row.seq for row in rows]


def account_counters_against_entries(
    connection: Connection, limit: int
) -> list[tuple[UUID, int, int, int, int]]:
    """Accounts whose posted counters differ from the sums of their entries."""
    rows = connection.execute(
        sa.text(
            "SELECT a.id, a.debits_posted, a.credits_posted, "
            "coalesce(x.debits, 0) AS debits, coalesce(x.credits, 0) AS credits "
            "FROM accounts a LEFT JOIN (SELECT account_id, "
            "sum(CASE WHEN direction = 'debit' THEN amount ELSE 0 END) AS debits, "
            "sum(CASE WHEN direction = 'credit' THEN amount ELSE 0 END) AS credits "
            "FROM ledger_entries GROUP BY account_id) x ON x.account_id = a.id "
            "WHERE a.debits_posted <> coalesce(x.debits, 0) "
            "OR a.credits_posted <> coalesce(x.credits, 0) ORDER BY a.id LIMIT :n"
        ),
        {"n": limit},
    )
    return [
        (row.id, row.debits_posted, row.credits_posted, int(row.debits), int(row.credits))
        for row in rows
    ]


def entries_of(rows: Sequence[SealedRow]) -> list[LedgerEntry]:
    return [row.entry for row in rows if row.entry is not None]
