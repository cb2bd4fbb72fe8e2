"""Upsell suggestions asked for by crossings wait for the worker instead of being projected inline

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upsell_due",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=True),
        sa.Column("usage", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_upsell_due_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "entitlement_id", "period_start", name=op.f("pk_upsell_due")),
    )


def downgrade() -> None:
    op.drop_table("upsell_due")
