"""Events of a type found by the minute of their time, not the exact time (cheaper to keep)

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_tenant_type_minute", "events",
                    ["tenant_id", "type", sa.text("(time_us / 60000000)")], unique=False)
    op.drop_index("ix_events_tenant_type_time", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_tenant_type_time", "events", ["tenant_id", "type", "time_us"], unique=False)
    op.drop_index("ix_events_tenant_type_minute", table_name="events")
