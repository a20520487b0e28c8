"""PostgreSQL: fillfactor of targets (50) and observations (90), so that a check's updates of its target row
and latest span stay in their pages (HOT updates, no index writes). SQLite: nothing.

The setting applies to pages written from now on; rows already stored get the room when the table is
rewritten (`VACUUM FULL targets` — small, one row per target — in a maintenance window, or pg_repack).

Revision ID: 0005_pg_fillfactor
Revises: 0004_page_digest
"""
from alembic import op

from tracker.models import FILLFACTOR

revision = '0005_pg_fillfactor'
down_revision = '0004_page_digest'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, fillfactor in FILLFACTOR.items():
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {int(fillfactor)})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in FILLFACTOR:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
