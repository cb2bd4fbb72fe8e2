"""Grants: extra units on a customer's metered feature (top-ups, promotions, credits)

Also `entitlement_usage.carried`: the overage carried into a period from the one before
(NULL until the period's carry has been fixed; see docs/grants.md).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

QUANTITY = sa.Numeric(precision=38, scale=6).with_variant(sa.String(length=64), "sqlite")


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("feature_id", sa.String(length=40), nullable=False),
        sa.Column("amount", QUANTITY, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("void_reason", sa.String(length=512), nullable=True),
        sa.Column("min_rollover", QUANTITY, nullable=False),
        sa.Column("max_rollover", QUANTITY, nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_grants_tenant_id_tenants")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_grants_customer_id_customers")),
        sa.ForeignKeyConstraint(["feature_id"], ["features.id"], name=op.f("fk_grants_feature_id_features")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_grants_tenant_id_customer_id_feature_id"),
            ["tenant_id", "customer_id", "feature_id"], unique=False,
        )
    with op.batch_alter_table("entitlement_usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("carried", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("entitlement_usage", schema=None) as batch_op:
        batch_op.drop_column("carried")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_tenant_id_customer_id_feature_id"))
    op.drop_table("grants")
