"""Grants remember the usage of their period at the instant they ended (expiry or void)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("usage_at_end", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("usage_at_end")
