"""A customer's entitlement rows for a feature found by when they start

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_customer_entitlements_pair_from",
        "customer_entitlements", ["customer_id", "feature_id", "active_from"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_customer_entitlements_pair_from",
        table_name="customer_entitlements",
    )
