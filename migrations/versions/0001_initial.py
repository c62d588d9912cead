"""initial schema: images, models, embeddings, roots

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:21:07.512880
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('mtime', sa.Float(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('display_width', sa.Integer(), nullable=True),
    sa.Column('display_height', sa.Integer(), nullable=True),
    sa.Column('orientation', sa.Integer(), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=True),
    sa.Column('taken_at', sa.DateTime(), nullable=True),
    sa.Column('camera_make', sa.String(length=128), nullable=True),
    sa.Column('camera_model', sa.String(length=128), nullable=True),
    sa.Column('thumbnail', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('indexed_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('path')
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_images_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_images_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_images_taken_at'), ['taken_at'], unique=False)

    op.create_table('models',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('roots',
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('added_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('path')
    )
    op.create_table('embeddings',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model'], ['models.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'model')
    )


def downgrade() -> None:
    op.drop_table('embeddings')
    op.drop_table('roots')
    op.drop_table('models')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_taken_at'))
        batch_op.drop_index(batch_op.f('ix_images_status'))
        batch_op.drop_index(batch_op.f('ix_images_sha256'))

    op.drop_table('images')
