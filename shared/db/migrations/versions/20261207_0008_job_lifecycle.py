"""one job lifecycle: studies count their resent messages, predictions write heartbeats

Revision ID: 0008_job_lifecycle
Revises: 0007_worker_node
Create Date: 2026-12-07 20:00:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = "0008_job_lifecycle"
down_revision = "0007_worker_node"
branch_labels = None
depends_on = None

# Microseconds, as every other timestamp column (naive UTC).
DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("feature_extraction_task") as batch:
        batch.add_column(sa.Column("requeues", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("prediction") as batch:
        batch.add_column(sa.Column("heartbeat_at", DATETIME6, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction") as batch:
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("feature_extraction_task") as batch:
        batch.drop_column("requeues")
