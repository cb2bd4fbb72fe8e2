"""Seat leases: which items hold a seat of a seats entitlement, and until when

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seat_leases",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.String(length=40), nullable=False),
        sa.Column("item", sa.String(length=255), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_seat_leases_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["entitlement_id"], ["customer_entitlements.id"],
            name=op.f("fk_seat_leases_entitlement_id_customer_entitlements"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "entitlement_id", "item", name=op.f("pk_seat_leases")),
    )


def downgrade() -> None:
    op.drop_table("seat_leases")
