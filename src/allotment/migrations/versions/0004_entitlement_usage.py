"""Live entitlement counters, recorded denials and idempotent consumptions

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Exact decimals: NUMERIC on PostgreSQL, text on SQLite (whose NUMERIC affinity is a double).
QUANTITY = sa.Numeric(precision=38, scale=6).with_variant(sa.String(length=64), "sqlite")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entitlement_usage",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_entitlement_usage_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["entitlement_id"], ["customer_entitlements.id"],
            name=op.f("fk_entitlement_usage_entitlement_id_customer_entitlements"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "entitlement_id", "period_start", name=op.f("pk_entitlement_usage")),
    )
    op.create_table(
        "usage_denials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("feature_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quantity", QUANTITY, nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_usage_denials_customer_id_customers")),
        sa.ForeignKeyConstraint(["feature_id"], ["features.id"], name=op.f("fk_usage_denials_feature_id_features")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_usage_denials_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_denials")),
    )
    with op.batch_alter_table("usage_denials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_denials_tenant_id_at"), ["tenant_id", "at"], unique=False)
    op.create_table(
        "consumptions",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_consumptions_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "idempotency_key", name=op.f("pk_consumptions")),
    )


def downgrade() -> None:
    op.drop_table("consumptions")
    with op.batch_alter_table("usage_denials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_denials_tenant_id_at"))
    op.drop_table("usage_denials")
    op.drop_table("entitlement_usage")
