"""Counters learn when their period ends, and whether its reset was told

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entitlement_usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("period_end", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("reset_told", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index(
        "ix_entitlement_usage_reset_told_period_end", "entitlement_usage", ["reset_told", "period_end"]
    )


def downgrade() -> None:
    op.drop_index("ix_entitlement_usage_reset_told_period_end", table_name="entitlement_usage")
    with op.batch_alter_table("entitlement_usage", schema=None) as batch_op:
        batch_op.drop_column("reset_told")
        batch_op.drop_column("period_end")
