"""Meters and customer entitlements keep their metadata; subjects their Stripe customer id
and current period; grants their annotations

Revision ID: 0036
Revises: 0035
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("meters", "customer_entitlements"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("metadata", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("subjects") as batch_op:
        batch_op.add_column(sa.Column("stripe_customer_id", sa.String(256), nullable=True))
        batch_op.add_column(sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("grants") as batch_op:
        batch_op.add_column(sa.Column("annotations", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch_op:
        batch_op.drop_column("annotations")
    with op.batch_alter_table("subjects") as batch_op:
        for column in ("current_period_end", "current_period_start", "stripe_customer_id"):
            batch_op.drop_column(column)
    for table in ("customer_entitlements", "meters"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("metadata")
