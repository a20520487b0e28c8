"""dispatches: the slot each target is due for in scale-out mode, when it was sent, how often

Revision ID: 0003_dispatches
Revises: 0002_matches
"""
from alembic import op
import sqlalchemy as sa
import tracker.models


revision = '0003_dispatches'
down_revision = '0002_matches'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dispatches',
    sa.Column('target_id', sa.Integer(), sa.ForeignKey('targets.id', ondelete='CASCADE'), nullable=False),
    sa.Column('slot', tracker.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('queue', sa.String(length=16), nullable=False),
    sa.Column('due_at', tracker.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', tracker.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('message_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('target_id')
    )
    op.create_index('ix_dispatches_due_at', 'dispatches', ['due_at'])


def downgrade() -> None:
    op.drop_index('ix_dispatches_due_at', table_name='dispatches')
    op.drop_table('dispatches')
