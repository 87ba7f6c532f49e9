"""predictions as jobs (table `prediction`), requeue count of training runs

Revision ID: 0004_predictions
Revises: 0003_train_platform
Create Date: 2026-12-07 13:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0004_predictions'
down_revision = '0003_train_platform'
branch_labels = None
depends_on = None

DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb')


def upgrade() -> None:
    op.create_table('prediction',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('created_at', DATETIME6, nullable=False),
    sa.Column('updated_at', DATETIME6, nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('feature_extraction_id', sa.Integer(), nullable=False),
    sa.Column('label_category_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('requeues', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('started_at', DATETIME6, nullable=True),
    sa.Column('finished_at', DATETIME6, nullable=True),
    sa.Column('predictions', sa.JSON(), nullable=True),
    sa.Column('skipped', sa.JSON(), nullable=True),
    sa.Column('excluded_from_metrics', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('validation', sa.String(length=255), nullable=True),
    sa.Column('n_labelled', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['feature_extraction_id'], ['feature_extraction.id'], name=op.f('fk_prediction_feature_extraction_id_feature_extraction'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['label_category_id'], ['label_category.id'], name=op.f('fk_prediction_label_category_id_label_category'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_prediction_model_id_model'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction')),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin'
    )
    op.create_index(op.f('ix_prediction_feature_extraction_id'), 'prediction', ['feature_extraction_id'], unique=False)
    op.create_index(op.f('ix_prediction_model_id'), 'prediction', ['model_id'], unique=False)
    op.create_index(op.f('ix_prediction_user_id'), 'prediction', ['user_id'], unique=False)
    op.add_column('training_run', sa.Column('requeues', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    op.drop_column('training_run', 'requeues')
    # MySQL refuses to drop an index a foreign key needs; the table takes them all with it.
    op.drop_table('prediction')
