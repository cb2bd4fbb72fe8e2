"""Entitlement rows found by when they start or end (scheduled changes told when they happen)

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_customer_entitlements_active_from", "customer_entitlements", ["active_from"])
    op.create_index("ix_customer_entitlements_active_to", "customer_entitlements", ["active_to"])


def downgrade() -> None:
    op.drop_index("ix_customer_entitlements_active_to", table_name="customer_entitlements")
    op.drop_index("ix_customer_entitlements_active_from", table_name="customer_entitlements")
