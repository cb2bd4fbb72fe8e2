"""Webhook endpoints choose their body form: native, or OpenMeter's for its channels

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("body_format", sa.String(length=16), nullable=False, server_default="native")
        )
    # Channels made through the OpenMeter API (the only endpoints that are rules-only then)
    # get OpenMeter's bodies, as their receivers expect.
    op.execute("UPDATE webhook_endpoints SET body_format = 'openmeter' WHERE rules_only")


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_column("body_format")
