"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-21 23:10:46.056350
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('event_id', sa.String(length=256), nullable=False),
    sa.Column('type', sa.String(length=256), nullable=False),
    sa.Column('subject', sa.String(length=256), nullable=False),
    sa.Column('time_us', sa.BigInteger(), nullable=False),
    sa.Column('received_us', sa.BigInteger(), nullable=False),
    sa.Column('data', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_events')),
    sa.UniqueConstraint('tenant_id', 'source', 'event_id', name='uq_events_identity')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_tenant_type_time', ['tenant_id', 'type', 'time_us'], unique=False)

    op.create_table('rejected_events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('received_us', sa.BigInteger(), nullable=False),
    sa.Column('batch_index', sa.Integer(), nullable=False),
    sa.Column('field', sa.String(length=256), nullable=True),
    sa.Column('reason', sa.String(length=1024), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_rejected_events'))
    )
    with op.batch_alter_table('rejected_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rejected_events_tenant_id_received_us'), ['tenant_id', 'received_us'], unique=False)

    op.create_table('rollup_journal',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_rollup_journal'))
    )
    with op.batch_alter_table('rollup_journal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollup_journal_tenant_id_seq'), ['tenant_id', 'seq'], unique=False)

    op.create_table('rollup_distinct',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('meter_id', sa.String(length=40), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=256), nullable=False),
    sa.Column('group_key', sa.String(length=1024), nullable=False),
    sa.Column('bucket', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'meter_id', 'width', 'subject', 'group_key', 'bucket', 'value', name=op.f('pk_rollup_distinct')),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('rollup_distinct', schema=None) as batch_op:
        batch_op.create_index('ix_rollup_distinct_meter_width_bucket', ['tenant_id', 'meter_id', 'width', 'bucket'], unique=False)

    op.create_table('rollups',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('meter_id', sa.String(length=40), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=256), nullable=False),
    sa.Column('group_key', sa.String(length=1024), nullable=False),
    sa.Column('bucket', sa.BigInteger(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('lo', sa.BigInteger(), nullable=True),
    sa.Column('hi', sa.BigInteger(), nullable=True),
    sa.Column('last_value', sa.BigInteger(), nullable=True),
    sa.Column('last_us', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('tenant_id', 'meter_id', 'width', 'subject', 'group_key', 'bucket', name=op.f('pk_rollups')),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('rollups', schema=None) as batch_op:
        batch_op.create_index('ix_rollups_meter_width_bucket', ['tenant_id', 'meter_id', 'width', 'bucket'], unique=False)

    op.create_table('tenants',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('hint', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_api_keys_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_api_keys_secret_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_tenant_id_created_at'), ['tenant_id', 'created_at'], unique=False)

    op.create_table('customers',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('description', sa.String(length=1024), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_customers_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers'))
    )
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('uq_customers_tenant_key_live', ['tenant_id', 'key'], unique=True, sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.create_table('meters',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('description', sa.String(length=1024), nullable=True),
    sa.Column('event_type', sa.String(length=256), nullable=False),
    sa.Column('aggregation', sa.String(length=16), nullable=False),
    sa.Column('value_property', sa.String(length=256), nullable=True),
    sa.Column('group_by', sa.JSON(), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_meters_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_meters'))
    )
    with op.batch_alter_table('meters', schema=None) as batch_op:
        batch_op.create_index('uq_meters_tenant_key_live', ['tenant_id', 'key'], unique=True, sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.create_table('subjects',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=256), nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_subjects_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('tenant_id', 'key', name=op.f('pk_subjects')),
    sa.UniqueConstraint('id', name=op.f('uq_subjects_id'))
    )
    op.create_table('customer_subjects',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('subject_key', sa.String(length=256), nullable=False),
    sa.Column('customer_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_customer_subjects_customer_id_customers')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_customer_subjects_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('tenant_id', 'subject_key', name=op.f('pk_customer_subjects'))
    )
    with op.batch_alter_table('customer_subjects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_subjects_customer_id'), ['customer_id'], unique=False)




def downgrade() -> None:
    
    with op.batch_alter_table('customer_subjects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_subjects_customer_id'))

    op.drop_table('customer_subjects')
    op.drop_table('subjects')
    with op.batch_alter_table('meters', schema=None) as batch_op:
        batch_op.drop_index('uq_meters_tenant_key_live', sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.drop_table('meters')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('uq_customers_tenant_key_live', sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.drop_table('customers')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenant_id_created_at'))

    op.drop_table('api_keys')
    op.drop_table('tenants')
    with op.batch_alter_table('rollups', schema=None) as batch_op:
        batch_op.drop_index('ix_rollups_meter_width_bucket')

    op.drop_table('rollups')
    with op.batch_alter_table('rollup_distinct', schema=None) as batch_op:
        batch_op.drop_index('ix_rollup_distinct_meter_width_bucket')

    op.drop_table('rollup_journal')

    op.drop_table('rollup_distinct')
    with op.batch_alter_table('rejected_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rejected_events_tenant_id_received_us'))

    op.drop_table('rejected_events')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_tenant_type_time')

    op.drop_table('events')

