"""Least privilege per function: a database role for each of accounts, transfers, ledger, relay.

Each role (NOLOGIN; the migration Job grants it to that function's own login) may touch only
the tables its code touches, and only in the ways it does (read from `adapters/` and
`services/`):

    table               accounts   transfers  ledger     relay
    accounts            S I U      S U        S          -
    transfers           -          S I U      -          -
    account_transfers   -          S I        -          -
    holds               S          S I D      -          -
    ledger_entries      -          I          S          -
    ledger_unsequenced  -          I          S D        -
    ledger_sequence     -          -          S I        -
    ledger_checkpoints  -          -          S I        -
    ledger_keys         -          -          S I        -
    outbox              I          I          I          S U D
    inbox               S I        S I        -          -

    S SELECT, I INSERT, U UPDATE, D DELETE. No role may UPDATE, DELETE or TRUNCATE the
    ledger's history (entries, sequence, checkpoints, keys); the ledger function reads entries
    and writes the seal (sequence, checkpoints, keys) and nothing a transfer writes but the
    queue rows it sealed. SELECT ... FOR UPDATE needs UPDATE: only where the code locks rows.

Expand step (docs/operations.md): `holdfast_functions` (0002) and its one shared login keep
working, so revisions of the previous release run unchanged beside the new ones. A later
contract migration revokes it once no revision uses the shared login. Tables that later
migrations create get no grant to these roles by default: each must grant explicitly.

Only SQL that both PostgreSQL and CockroachDB run: CREATE ROLE (after a look at pg_roles, as
CockroachDB and PostgreSQL differ on IF NOT EXISTS for roles) and GRANT ... ON TABLE with an
explicit list of tables.

Revision ID: 0005
"""

from alembic import op
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

revision = "0005"
down_revision = "0004"

# role -> privilege -> tables (the matrix above).
GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "holdfast_accounts": {
        "SELECT": ("accounts", "holds", "inbox"),
        "INSERT": ("accounts", "outbox", "inbox"),
        "UPDATE": ("accounts",),
    },
    "holdfast_transfers": {
        "SELECT": ("accounts", "transfers", "account_transfers", "holds", "inbox"),
        "INSERT": (
            "transfers",
            "account_transfers",
            "holds",
            "ledger_entries",
            "ledger_unsequenced",
            "outbox",
            "inbox",
        ),
        "UPDATE": ("accounts", "transfers"),
        "DELETE": ("holds",),
    },
    "holdfast_ledger": {
        "SELECT": (
            "accounts",
            "ledger_entries",
            "ledger_unsequenced",
            "ledger_sequence",
            "ledger_checkpoints",
            "ledger_keys",
        ),
        "INSERT": ("ledger_sequence", "ledger_checkpoints", "ledger_keys", "outbox"),
        "DELETE": ("ledger_unsequenced",),
    },
    "holdfast_relay": {
        "SELECT": ("outbox",),
        "UPDATE": ("outbox",),
        "DELETE": ("outbox",),
    },
}


def create_role(name: str) -> None:
    connection = op.get_bind()
    # Roles belong to the cluster, not the database: another database may have made it.
    exists = connection.execute(
        text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role"), {"role": name}
    ).scalar()
    if exists:
        return
    # A concurrent migration of another database may create it first: that is fine.
    savepoint = connection.begin_nested()
    try:
        connection.execute(text(f"CREATE ROLE {name}"))
        savepoint.commit()
    except ProgrammingError:
        savepoint.rollback()


def upgrade() -> None:
    for role, privileges in GRANTS.items():
        create_role(role)
        for privilege, tables in privileges.items():
            op.execute(f"GRANT {privilege} ON TABLE {', '.join(tables)} TO {role}")
