"""Accounts, transfers, holds, ledger entries, outbox and inbox.

Only SQL that both PostgreSQL and CockroachDB run: UUID keys chosen by clients, no sequences,
no advisory locks, no LISTEN/NOTIFY. Money columns are BIGINT minor units with CHECKs.

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None

STATEMENTS = [
    """
    CREATE TABLE accounts (
        id UUID PRIMARY KEY,
        currency TEXT NOT NULL CHECK (length(currency) = 3),
        owner TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'frozen', 'closed')),
        normal_balance TEXT NOT NULL CHECK (normal_balance IN ('credit', 'debit')),
        overdraft_limit BIGINT CHECK (overdraft_limit >= 0),
        debits_posted BIGINT NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
        credits_posted BIGINT NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
        debits_reserved BIGINT NOT NULL DEFAULT 0 CHECK (debits_reserved >= 0),
        credits_reserved BIGINT NOT NULL DEFAULT 0 CHECK (credits_reserved >= 0),
        metadata JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
    "CREATE INDEX accounts_owner_idx ON accounts (owner, id)",
    """
    CREATE TABLE transfers (
        id UUID PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('reserved', 'confirmed', 'cancelled', 'expired')),
        currency TEXT,
        legs JSONB NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        timeout_s INT,
        immediate BOOLEAN NOT NULL,
        metadata JSONB NOT NULL,
        request JSONB,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ,
        confirmed_amount BIGINT CHECK (confirmed_amount > 0),
        resolved_at TIMESTAMPTZ
    )
    """,
    # The sweep's work list: reservations by expiry, and nothing else.
    "CREATE INDEX transfers_reserved_expiry_idx ON transfers (expires_at) WHERE state = 'reserved'",
    """
    CREATE TABLE account_transfers (
        account_id UUID NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        transfer_id UUID NOT NULL,
        PRIMARY KEY (account_id, created_at, transfer_id)
    )
    """,
    # A hold exists exactly while its transfer is reserved.
    """
    CREATE TABLE holds (
        transfer_id UUID NOT NULL,
        account_id UUID NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
        amount BIGINT NOT NULL CHECK (amount > 0),
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (transfer_id, account_id, direction)
    )
    """,
    "CREATE INDEX holds_account_expiry_idx ON holds (account_id, expires_at)",
    # Append-only: the functions' roles get INSERT and SELECT only (see docs/architecture.md).
    """
    CREATE TABLE ledger_entries (
        id UUID PRIMARY KEY,
        transfer_id UUID NOT NULL,
        leg INT NOT NULL CHECK (leg >= 0),
        direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
        account_id UUID NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        posted_at TIMESTAMPTZ NOT NULL,
        UNIQUE (transfer_id, leg, direction)
    )
    """,
    "CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, posted_at)",
    # Entries not yet given a ledger sequence number: the sealer's queue.
    """
    CREATE TABLE ledger_unsequenced (
        entry_id UUID PRIMARY KEY,
        posted_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE outbox (
        id UUID PRIMARY KEY,
        type TEXT NOT NULL,
        source TEXT NOT NULL,
        subject TEXT NOT NULL,
        data JSONB NOT NULL,
        traceparent TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        position INT NOT NULL,
        attempts INT NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMPTZ NOT NULL,
        lease_owner TEXT,
        lease_until TIMESTAMPTZ,
        published_at TIMESTAMPTZ,
        last_error TEXT
    )
    """,
    "CREATE INDEX outbox_pending_idx ON outbox (created_at, position) WHERE published_at IS NULL",
    """
    CREATE TABLE inbox (
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at TIMESTAMPTZ NOT NULL,
        reply JSONB,
        PRIMARY KEY (source, event_id)
    )
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
