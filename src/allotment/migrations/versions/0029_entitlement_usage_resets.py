"""A metered entitlement's usage may be reset by hand: the row a reset starts says so

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customer_entitlements") as batch_op:
        batch_op.add_column(sa.Column("origin_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("reset_overage", sa.String(length=8), nullable=True))
        batch_op.create_index("ix_customer_entitlements_origin_id", ["origin_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("customer_entitlements") as batch_op:
        batch_op.drop_index("ix_customer_entitlements_origin_id")
        batch_op.drop_column("reset_overage")
        batch_op.drop_column("origin_id")
