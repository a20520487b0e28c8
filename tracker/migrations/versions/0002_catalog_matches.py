"""catalogue: decided product matches (tracker match --review)

Revision ID: 0002_matches
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import tracker.models


revision = '0002_matches'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('matches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('own_target_id', sa.Integer(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('decided_at', tracker.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['own_target_id'], ['targets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('target_id', 'own_target_id', name='uq_matches_pair')
    )
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_matches_target_id'), ['target_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_matches_own_target_id'), ['own_target_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_matches_own_target_id'))
        batch_op.drop_index(batch_op.f('ix_matches_target_id'))
    op.drop_table('matches')
