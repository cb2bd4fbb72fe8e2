"""Seat leases remember the length they were taken or last renewed with

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("seat_leases") as batch_op:
        batch_op.add_column(sa.Column("lease_ttl_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("seat_leases") as batch_op:
        batch_op.drop_column("lease_ttl_seconds")
