"""model kind: never null; rows without one take it from their outcome's type

Revision ID: 0006_model_kind
Revises: 0005_nested_cv
Create Date: 2026-12-07 17:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0006_model_kind"
down_revision = "0005_nested_cv"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Models imported from the old backend have no kind. Their outcome's type says it (the
    # model name, which embeds the album's name, does not).
    op.execute(
        "UPDATE model SET kind = CASE WHEN ("
        "SELECT LOWER(c.label_type) FROM label_category c WHERE c.id = model.label_category_id"
        ") = 'survival' THEN 'survival' ELSE 'classification' END WHERE kind IS NULL"
    )
    with op.batch_alter_table("model") as batch:
        batch.alter_column(
            "kind", existing_type=sa.String(length=16), nullable=False, server_default=None
        )


def downgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.alter_column("kind", existing_type=sa.String(length=16), nullable=True)
