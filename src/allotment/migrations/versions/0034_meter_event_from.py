"""A meter may count only the events from an instant on (event_from)

Revision ID: 0034
Revises: 0033
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meters") as batch_op:
        batch_op.add_column(sa.Column("event_from", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("meters") as batch_op:
        batch_op.drop_column("event_from")
