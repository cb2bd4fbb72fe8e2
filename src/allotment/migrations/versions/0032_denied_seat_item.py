"""A refused seat activation records the item (user, device) it was for

Revision ID: 0032
Revises: 0031
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_denials") as batch_op:
        batch_op.add_column(sa.Column("item", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_denials") as batch_op:
        batch_op.drop_column("item")
