"""targets.page_digest: the digest of the page behind a target's latest observation, so that an identical
page fetched again extends that observation without being parsed again

Revision ID: 0004_page_digest
Revises: 0003_dispatches
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_page_digest'
down_revision = '0003_dispatches'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('targets') as batch:
        batch.add_column(sa.Column('page_digest', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('targets') as batch:
        batch.drop_column('page_digest')
