"""Reservations: units held against a metered entitlement's live counter until commit or release

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUANTITY = sa.Numeric(precision=38, scale=6).with_variant(sa.String(length=64), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("feature_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("quantity", QUANTITY, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_quantity", QUANTITY, nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_reservations_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["entitlement_id"], ["customer_entitlements.id"],
            name=op.f("fk_reservations_entitlement_id_customer_entitlements"),
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_reservations_customer_id_customers")),
        sa.ForeignKeyConstraint(["feature_id"], ["features.id"], name=op.f("fk_reservations_feature_id_features")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name=op.f("uq_reservations_tenant_id_idempotency_key")),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reservations_tenant_id_entitlement_id_status_expires_at"),
            ["tenant_id", "entitlement_id", "status", "expires_at"], unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_tenant_id_entitlement_id_status_expires_at"))
    op.drop_table("reservations")
