"""worker node of each extraction study; heartbeat of each running training (host loss)

Revision ID: 0007_worker_node
Revises: 0005_nested_cv
Create Date: 2026-12-07 16:45:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = "0007_worker_node"
down_revision = "0006_model_kind"
branch_labels = None
depends_on = None

# Microseconds, as every other timestamp column (naive UTC).
DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("feature_extraction_task") as batch:
        batch.add_column(sa.Column("worker", sa.String(length=255), nullable=True))
    with op.batch_alter_table("training_run") as batch:
        batch.add_column(sa.Column("heartbeat_at", DATETIME6, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_run") as batch:
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("feature_extraction_task") as batch:
        batch.drop_column("worker")
