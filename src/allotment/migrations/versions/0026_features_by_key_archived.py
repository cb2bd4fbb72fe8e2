"""Features are found by key among archived ones too (customers keep an archived feature)

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("features", schema=None) as batch_op:
        batch_op.create_index("ix_features_tenant_key_archived", ["tenant_id", "key", "archived_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("features", schema=None) as batch_op:
        batch_op.drop_index("ix_features_tenant_key_archived")
