"""Metered entitlements may roll unused included units into the next usage period

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

QUANTITY = sa.Numeric(precision=38, scale=6).with_variant(sa.String(length=64), "sqlite")


def upgrade() -> None:
    for table in ("plan_entitlements", "customer_entitlements"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("included_rollover", QUANTITY, nullable=True))


def downgrade() -> None:
    for table in ("plan_entitlements", "customer_entitlements"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("included_rollover")
