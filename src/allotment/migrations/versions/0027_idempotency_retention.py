"""Remembered idempotency answers are found by age, so that workers can forget old ones

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotent_requests", schema=None) as batch_op:
        batch_op.create_index("ix_idempotent_requests_created_at", ["created_at"], unique=False)
    with op.batch_alter_table("consumptions", schema=None) as batch_op:
        batch_op.create_index("ix_consumptions_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("consumptions", schema=None) as batch_op:
        batch_op.drop_index("ix_consumptions_created_at")
    with op.batch_alter_table("idempotent_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotent_requests_created_at")
