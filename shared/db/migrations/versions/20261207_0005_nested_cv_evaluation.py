"""nested cross-validation: the selection CV metrics, how each figure was obtained, longer texts

Revision ID: 0005_nested_cv
Revises: 0004_predictions
Create Date: 2026-12-07 14:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0005_nested_cv"
down_revision = "0004_predictions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.add_column(sa.Column("selection_cv_metrics", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("evaluation", sa.JSON(), nullable=True))
        # The validation texts name the nested layout, the plan's notes and left-out patients.
        batch.alter_column(
            "training_validation",
            existing_type=sa.String(length=255),
            type_=sa.Text(),
            existing_nullable=False,
        )
        batch.alter_column(
            "test_validation",
            existing_type=sa.String(length=255),
            type_=sa.Text(),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.alter_column(
            "test_validation",
            existing_type=sa.Text(),
            type_=sa.String(length=255),
            existing_nullable=True,
        )
        batch.alter_column(
            "training_validation",
            existing_type=sa.Text(),
            type_=sa.String(length=255),
            existing_nullable=False,
        )
        batch.drop_column("evaluation")
        batch.drop_column("selection_cv_metrics")
