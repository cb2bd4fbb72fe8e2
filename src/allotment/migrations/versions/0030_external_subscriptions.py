"""Subscriptions of another billing system (Lago's external ids), linked to ours

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "external_subscriptions",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("system", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=True),
        sa.Column("plan_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_external_subscriptions_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_external_subscriptions_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["subscriptions.id"],
            name=op.f("fk_external_subscriptions_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "system", "external_id", name=op.f("pk_external_subscriptions")),
        sa.UniqueConstraint("id", name=op.f("uq_external_subscriptions_id")),
    )


def downgrade() -> None:
    op.drop_table("external_subscriptions")
