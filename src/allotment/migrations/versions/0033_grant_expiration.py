"""A grant keeps the expiration span a client gave ({duration, count}) next to its expiry

Revision ID: 0033
Revises: 0032
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch_op:
        batch_op.add_column(sa.Column("expiration", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch_op:
        batch_op.drop_column("expiration")
