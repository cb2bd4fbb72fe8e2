"""Notification routing: rules name the endpoints they send to, endpoints may take only those,
endpoints carry custom headers, rules a name, notifications the rule they were sent for

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rules_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("headers", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("notification_rules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=256), nullable=True))
        batch_op.add_column(
            sa.Column("endpoint_ids", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rule_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("rule_id")
    with op.batch_alter_table("notification_rules", schema=None) as batch_op:
        batch_op.drop_column("endpoint_ids")
        batch_op.drop_column("name")
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_column("headers")
        batch_op.drop_column("rules_only")
