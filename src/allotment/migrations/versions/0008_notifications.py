"""Notifications: webhook endpoints, the outbox, deliveries and the attempt log

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)
PENDING = sa.text("status = 'pending'")
NOT_FANNED_OUT = sa.text("fanned_out_at IS NULL")


def _fk(table: str, column: str, target: str, target_column: str = "id") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.{target_column}"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=True),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=512), nullable=True),
        sa.Column("disabled_at", WHEN, nullable=True),
        sa.Column("failing_since", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.Column("deleted_at", WHEN, nullable=True),
        _fk("webhook_endpoints", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_endpoints_tenant_id_id"), ["tenant_id", "id"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=256), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("endpoint_id", sa.String(length=40), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("fanned_out_at", WHEN, nullable=True),
        _fk("notifications", "tenant_id", "tenants"),
        _fk("notifications", "customer_id", "customers"),
        _fk("notifications", "endpoint_id", "webhook_endpoints"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_notifications")),
        sa.UniqueConstraint("id", name=op.f("uq_notifications_id")),
        sa.UniqueConstraint("tenant_id", "dedupe_key", name=op.f("uq_notifications_tenant_id_dedupe_key")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_fan_out", ["seq"], unique=False,
            sqlite_where=NOT_FANNED_OUT, postgresql_where=NOT_FANNED_OUT,
        )
        batch_op.create_index(
            batch_op.f("ix_notifications_tenant_id_customer_id_seq"), ["tenant_id", "customer_id", "seq"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_notifications_tenant_id_type_seq"), ["tenant_id", "type", "seq"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_notifications_tenant_id_seq"), ["tenant_id", "seq"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("notification_seq", SEQ, nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("ordering_key", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", WHEN, nullable=False),
        sa.Column("locked_until", WHEN, nullable=True),
        sa.Column("lease", sa.String(length=40), nullable=True),
        sa.Column("first_attempt_at", WHEN, nullable=True),
        sa.Column("last_attempt_at", WHEN, nullable=True),
        sa.Column("delivered_at", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        _fk("webhook_deliveries", "tenant_id", "tenants"),
        _fk("webhook_deliveries", "notification_seq", "notifications", "seq"),
        _fk("webhook_deliveries", "endpoint_id", "webhook_endpoints"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "notification_seq", "endpoint_id", name=op.f("uq_webhook_deliveries_notification_seq_endpoint_id")
        ),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["next_attempt_at"], unique=False,
            sqlite_where=PENDING, postgresql_where=PENDING,
        )
        batch_op.create_index(
            "ix_webhook_deliveries_queue", ["endpoint_id", "ordering_key", "notification_seq"], unique=False,
            sqlite_where=PENDING, postgresql_where=PENDING,
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_tenant_id_endpoint_id_notification_seq"),
            ["tenant_id", "endpoint_id", "notification_seq"], unique=False,
        )

    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        _fk("webhook_attempts", "tenant_id", "tenants"),
        _fk("webhook_attempts", "delivery_id", "webhook_deliveries"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_attempts_delivery_id_attempt"), ["delivery_id", "attempt"], unique=False
        )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("notifications")
    op.drop_table("webhook_endpoints")
