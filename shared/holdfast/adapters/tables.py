"""SQLAlchemy Core descriptions of the tables the migrations create (used for DML only).

The migrations in `migrations/versions` are the source of truth for DDL; a test checks that
these descriptions match the migrated database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()


def _ts(name: str, nullable: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


accounts = Table(
    "accounts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("currency", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("normal_balance", Text, nullable=False),
    Column("overdraft_limit", BigInteger),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_reserved", BigInteger, nullable=False),
    Column("credits_reserved", BigInteger, nullable=False),
    Column("metadata", JSONB, nullable=False),  # legacy plaintext: `{}` for new rows
    _ts("created_at"),
    _ts("updated_at"),
    Column("metadata_sealed", LargeBinary),
    Column("metadata_key_id", Text),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("state", Text, nullable=False),
    Column("currency", Text),
    Column("legs", JSONB, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("timeout_s", Integer),
    Column("immediate", Boolean, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("request", JSONB),
    Column("created_by", Text, nullable=False),
    _ts("created_at"),
    _ts("expires_at", nullable=True),
    Column("confirmed_amount", BigInteger),
    _ts("resolved_at", nullable=True),
    Column("metadata_sealed", LargeBinary),
    Column("metadata_key_id", Text),
)

account_transfers = Table(
    "account_transfers",
    metadata,
    Column("account_id", Uuid, primary_key=True),
    _ts("created_at"),
    Column("transfer_id", Uuid, primary_key=True),
)

holds = Table(
    "holds",
    metadata,
    Column("transfer_id", Uuid, primary_key=True),
    Column("account_id", Uuid, primary_key=True),
    Column("direction", Text, primary_key=True),
    Column("amount", BigInteger, nullable=False),
    _ts("expires_at"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("transfer_id", Uuid, nullable=False),
    Column("leg", Integer, nullable=False),
    Column("direction", Text, nullable=False),
    Column("account_id", Uuid, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    _ts("posted_at"),
)

ledger_unsequenced = Table(
    "ledger_unsequenced",
    metadata,
    Column("entry_id", Uuid, primary_key=True),
    _ts("posted_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("type", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("traceparent", Text),
    _ts("created_at"),
    Column("position", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    _ts("next_attempt_at"),
    Column("lease_owner", Text),
    _ts("lease_until", nullable=True),
    _ts("published_at", nullable=True),
    Column("last_error", Text),
)

inbox = Table(
    "inbox",
    metadata,
    Column("source", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    _ts("received_at"),
    Column("reply", JSONB),
)
