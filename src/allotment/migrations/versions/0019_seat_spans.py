"""Seat spans: the leases an item held before its latest one (for the overdraft report)

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seat_spans",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.String(length=40), nullable=False),
        sa.Column("item", sa.String(length=255), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_seat_spans_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["entitlement_id"], ["customer_entitlements.id"],
            name=op.f("fk_seat_spans_entitlement_id_customer_entitlements"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "entitlement_id", "item", "activated_at", name=op.f("pk_seat_spans")),
    )


def downgrade() -> None:
    op.drop_table("seat_spans")
