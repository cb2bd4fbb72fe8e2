"""Recurring grants: a calendar step from an anchor, and the usage at each recurrence

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recurrence_interval", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("recurrence_anchor", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("recurrence_timezone", sa.String(length=64), nullable=True))
    op.create_table(
        "grant_recurrences",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], name=op.f("fk_grant_recurrences_grant_id_grants")),
        sa.PrimaryKeyConstraint("tenant_id", "grant_id", "at_us", name=op.f("pk_grant_recurrences")),
    )


def downgrade() -> None:
    op.drop_table("grant_recurrences")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("recurrence_timezone")
        batch_op.drop_column("recurrence_anchor")
        batch_op.drop_column("recurrence_interval")
