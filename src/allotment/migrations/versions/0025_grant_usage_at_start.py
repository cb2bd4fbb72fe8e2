"""Grants remember the usage of their period at the instant they became effective in it

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("usage_at_start", sa.BigInteger(), nullable=True))
    # Grants made before this was kept were burned by all of their first period's usage:
    # as if none of it came before them, which 0 says. Their balances stay as they were.
    op.execute("UPDATE grants SET usage_at_start = 0")


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("usage_at_start")
