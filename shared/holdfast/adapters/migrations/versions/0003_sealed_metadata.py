"""Personal data at rest: sealed (AES-GCM) metadata on accounts and transfers.

Expand step: the new columns sit beside the old plaintext `metadata`, which new code writes
as `{}`. Rows written before this migration keep their plaintext until `holdfast keys rotate`
seals them; a later migration may then drop nothing more than a now-empty default.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"

STATEMENTS = [
    "ALTER TABLE accounts ADD COLUMN metadata_sealed BYTEA",
    "ALTER TABLE accounts ADD COLUMN metadata_key_id TEXT",
    "ALTER TABLE transfers ADD COLUMN metadata_sealed BYTEA",
    "ALTER TABLE transfers ADD COLUMN metadata_key_id TEXT",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
