"""An index for pruning published outbox rows without scanning the table.

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute(
        "CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL"
    )
