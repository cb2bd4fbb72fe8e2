"""Rollup journal payloads compressed with LZ4 on PostgreSQL, where the server has it

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# PostgreSQL compresses a value past about 2 kB before storing it; a journal row (a whole
# transaction's minute cells) always is, and pglz took 2 % of the machine's CPU during HTTP
# ingest, LZ4 a fifth of that (docs/storage.md). A server built without LZ4 keeps pglz.
_HAS_LZ4 = (
    "SELECT count(*) FROM pg_settings"
    " WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and bind.exec_driver_sql(_HAS_LZ4).scalar():
        op.execute("ALTER TABLE rollup_journal ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rollup_journal ALTER COLUMN payload SET COMPRESSION default")
