"""The sealed ledger: ledger order, signed checkpoints, signing keys, and the functions' role.

`ledger_sequence` gives each entry its place in the ledger order (`seq`) and the checkpoint that
sealed it; entries themselves are never updated. `ledger_checkpoints` holds the signed
checkpoints: the primary key on the number makes two concurrent sealers collide, one retries.
Both are written only by the sealer, in batches, never on the path of a transfer.

The database guard: role `holdfast_functions` (NOLOGIN; grant it to the functions' login user)
may INSERT and SELECT the ledger's history but never UPDATE or DELETE it (docs/ledger.md).

Only SQL that both PostgreSQL and CockroachDB run.

Revision ID: 0002
"""

from alembic import op
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

revision = "0002"
down_revision = "0001"

ROLE = "holdfast_functions"

STATEMENTS = [
    """
    CREATE TABLE ledger_checkpoints (
        number BIGINT PRIMARY KEY CHECK (number >= 1),
        first_seq BIGINT NOT NULL CHECK (first_seq >= 1),
        last_seq BIGINT NOT NULL,
        entry_count INT NOT NULL CHECK (entry_count >= 1),
        entries_root TEXT NOT NULL CHECK (length(entries_root) = 64),
        previous_digest TEXT NOT NULL CHECK (length(previous_digest) = 64),
        digest TEXT NOT NULL UNIQUE CHECK (length(digest) = 64),
        key_id TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        signature TEXT NOT NULL CHECK (length(signature) = 128),
        CHECK (last_seq = first_seq + entry_count - 1)
    )
    """,
    # account_id and transfer_id are copied from the entry (immutable) so that a filtered page
    # in ledger order is one index range; `holdfast audit check` compares them with the entry.
    """
    CREATE TABLE ledger_sequence (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        entry_id UUID NOT NULL UNIQUE REFERENCES ledger_entries (id),
        checkpoint BIGINT NOT NULL REFERENCES ledger_checkpoints (number),
        transfer_id UUID NOT NULL,
        account_id UUID NOT NULL,
        leaf_hash BYTEA NOT NULL CHECK (length(leaf_hash) = 32)
    )
    """,
    "CREATE INDEX ledger_sequence_account_idx ON ledger_sequence (account_id, seq)",
    "CREATE INDEX ledger_sequence_transfer_idx ON ledger_sequence (transfer_id, seq)",
    # Every key that ever signed a checkpoint, so that old checkpoints stay verifiable.
    """
    CREATE TABLE ledger_keys (
        key_id TEXT PRIMARY KEY,
        algorithm TEXT NOT NULL CHECK (algorithm = 'Ed25519'),
        public_key TEXT NOT NULL,
        first_used_at TIMESTAMPTZ NOT NULL
    )
    """,
    # The guard. Tables of 0001 other than the ledger's: full DML.
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE accounts, transfers, account_transfers, "
    f"holds, outbox, inbox TO {ROLE}",
    # History: insert and read, never change. TRUNCATE is not granted either.
    f"GRANT SELECT, INSERT ON TABLE ledger_entries, ledger_sequence, ledger_checkpoints, "
    f"ledger_keys TO {ROLE}",
    # The queue is not history: the sealer removes what it sealed.
    f"GRANT SELECT, INSERT, DELETE ON TABLE ledger_unsequenced TO {ROLE}",
    # Tables that later migrations create get full DML; an append-only one must REVOKE.
    f"ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE}",
]


def upgrade() -> None:
    connection = op.get_bind()
    # Roles belong to the cluster, not the database: another database may have made it.
    exists = connection.execute(
        text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role"), {"role": ROLE}
    ).scalar()
    if not exists:
        # A concurrent migration of another database may create it first: that is fine.
        savepoint = connection.begin_nested()
        try:
            connection.execute(text(f"CREATE ROLE {ROLE}"))
            savepoint.commit()
        except ProgrammingError:
            savepoint.rollback()
    for statement in STATEMENTS:
        op.execute(statement)
