"""Later arrivals of stored events (duplicates): how many per event, and when the last came

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_repeats",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "source", "event_id", name=op.f("pk_event_repeats")),
    )


def downgrade() -> None:
    op.drop_table("event_repeats")
