"""entitlements catalogue: features, plans, subscriptions, provisioned entitlements, audit log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Exact decimals: NUMERIC on PostgreSQL, text on SQLite (whose NUMERIC affinity is a double).
QUANTITY = sa.Numeric(precision=38, scale=6).with_variant(sa.String(length=64), 'sqlite')

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('entity_type', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.String(length=40), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_audit_log_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_tenant_id_at'), ['tenant_id', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_tenant_id_entity_type_entity_id'), ['tenant_id', 'entity_type', 'entity_id'], unique=False)

    op.create_table('plans',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('billing_interval', sa.String(length=8), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('next_tier', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_plans_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plans')),
    sa.UniqueConstraint('tenant_id', 'key', 'version', name=op.f('uq_plans_tenant_id_key_version'))
    )
    op.create_table('features',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('unit', sa.String(length=64), nullable=True),
    sa.Column('meter_id', sa.String(length=40), nullable=True),
    sa.Column('meter_group_filter', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['meter_id'], ['meters.id'], name=op.f('fk_features_meter_id_meters')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_features_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_features'))
    )
    with op.batch_alter_table('features', schema=None) as batch_op:
        batch_op.create_index('uq_features_tenant_key_live', ['tenant_id', 'key'], unique=True, sqlite_where=sa.text('archived_at IS NULL'), postgresql_where=sa.text('archived_at IS NULL'))

    op.create_table('subscriptions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('customer_id', sa.String(length=40), nullable=False),
    sa.Column('plan_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('billing_anchor', sa.DateTime(timezone=True), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_subscriptions_customer_id_customers')),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_subscriptions_plan_id_plans')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_subscriptions_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions'))
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriptions_tenant_id_customer_id'), ['tenant_id', 'customer_id'], unique=False)

    op.create_table('customer_entitlements',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('customer_id', sa.String(length=40), nullable=False),
    sa.Column('feature_id', sa.String(length=40), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('subscription_id', sa.String(length=40), nullable=True),
    sa.Column('usage_anchor', sa.DateTime(timezone=True), nullable=True),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('active_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('active_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('has_access', sa.Boolean(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=True),
    sa.Column('usage_period', sa.String(length=8), nullable=True),
    sa.Column('included', QUANTITY, nullable=True),
    sa.Column('soft_limit', QUANTITY, nullable=True),
    sa.Column('hard_limit', QUANTITY, nullable=True),
    sa.Column('overage_at_reset', sa.String(length=8), nullable=True),
    sa.Column('lease_ttl_seconds', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_customer_entitlements_customer_id_customers')),
    sa.ForeignKeyConstraint(['feature_id'], ['features.id'], name=op.f('fk_customer_entitlements_feature_id_features')),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], name=op.f('fk_customer_entitlements_subscription_id_subscriptions')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_customer_entitlements_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_entitlements'))
    )
    with op.batch_alter_table('customer_entitlements', schema=None) as batch_op:
        batch_op.create_index('uq_customer_entitlements_open', ['tenant_id', 'customer_id', 'feature_id'], unique=True, sqlite_where=sa.text('active_to IS NULL'), postgresql_where=sa.text('active_to IS NULL'))

    op.create_table('plan_entitlements',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('plan_id', sa.String(length=40), nullable=False),
    sa.Column('feature_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('has_access', sa.Boolean(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=True),
    sa.Column('usage_period', sa.String(length=8), nullable=True),
    sa.Column('included', QUANTITY, nullable=True),
    sa.Column('soft_limit', QUANTITY, nullable=True),
    sa.Column('hard_limit', QUANTITY, nullable=True),
    sa.Column('overage_at_reset', sa.String(length=8), nullable=True),
    sa.Column('lease_ttl_seconds', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['feature_id'], ['features.id'], name=op.f('fk_plan_entitlements_feature_id_features')),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_entitlements_plan_id_plans')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_plan_entitlements_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_entitlements')),
    sa.UniqueConstraint('plan_id', 'feature_id', name=op.f('uq_plan_entitlements_plan_id_feature_id'))
    )


def downgrade() -> None:
    op.drop_table('plan_entitlements')
    with op.batch_alter_table('customer_entitlements', schema=None) as batch_op:
        batch_op.drop_index('uq_customer_entitlements_open', sqlite_where=sa.text('active_to IS NULL'), postgresql_where=sa.text('active_to IS NULL'))

    op.drop_table('customer_entitlements')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriptions_tenant_id_customer_id'))

    op.drop_table('subscriptions')
    with op.batch_alter_table('features', schema=None) as batch_op:
        batch_op.drop_index('uq_features_tenant_key_live', sqlite_where=sa.text('archived_at IS NULL'), postgresql_where=sa.text('archived_at IS NULL'))

    op.drop_table('features')
    op.drop_table('plans')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_tenant_id_entity_type_entity_id'))
        batch_op.drop_index(batch_op.f('ix_audit_log_tenant_id_at'))

    op.drop_table('audit_log')
