"""tags: vocabularies of text labels, their labels' vectors per model, and each image's tags with their scores;
triggers drop an image's tags when its vector changes, so they are scored again; tags join the keyword index

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:20:00
"""

from importlib import import_module

import sqlalchemy as sa
from alembic import op

_0003 = import_module("vlsearch.migrations.versions.0003_products")  # a module name Python cannot import plainly

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

STALE = ("DELETE FROM image_tags WHERE image_id = new.image_id AND model = new.model; "
         "DELETE FROM image_tagging WHERE image_id = new.image_id AND model = new.model;")
TAGS = "coalesce((SELECT group_concat(label, ' ') FROM image_tags WHERE image_id = {i}), '')"
TRIGGERS = {
    "image_tags_vector_insert": f"AFTER INSERT ON embeddings BEGIN {STALE} END",
    "image_tags_vector_update": f"AFTER UPDATE OF vector ON embeddings BEGIN {STALE} END",
    **{f"image_text_tag_{event.lower()}": f"AFTER {event} ON image_tags BEGIN "
       f"UPDATE image_text SET tags = {TAGS.format(i=row + '.image_id')} WHERE rowid = {row}.image_id; END"
       for event, row in (("INSERT", "new"), ("DELETE", "old"))},
}


def _text_table(tags: bool) -> None:
    """image_text made again with (or without) a tags column, its rows from the sources; the triggers on images,
    captions, ocr and products name their columns, so they stay as 0003 made them."""
    op.execute("DROP TABLE image_text")
    op.execute(f"CREATE VIRTUAL TABLE image_text USING fts5(name, caption, ocr, product{', tags' if tags else ''}, "
               "tokenize = 'porter unicode61 remove_diacritics 2')")
    column, value = (", tags", f", {TAGS.format(i='id')}") if tags else ("", "")
    op.execute(f"INSERT INTO image_text(rowid, name, caption, ocr, product{column}) SELECT id, "
               f"{_0003.NAME.format(p='path')}, {_0003.CAPTIONS.format(i='id')}, {_0003.OCR.format(i='id')}, "
               f"{_0003.PRODUCTS.format(i='id')}{value} FROM images")


def upgrade() -> None:
    op.create_table('vocabularies',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('vocabulary_labels',
    sa.Column('vocabulary', sa.String(length=64), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['vocabulary'], ['vocabularies.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vocabulary', 'label')
    )
    op.create_table('label_vectors',
    sa.Column('vocabulary', sa.String(length=64), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['vocabulary', 'label'], ['vocabulary_labels.vocabulary', 'vocabulary_labels.label'],
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model'], ['models.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vocabulary', 'label', 'model')
    )
    op.create_table('image_tags',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('vocabulary', sa.String(length=64), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('similarity', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vocabulary'], ['vocabularies.name'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model'], ['models.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'vocabulary', 'label', 'model')
    )
    # A tag filter compares labels without case (search/query.py), as this index does.
    op.execute("CREATE INDEX ix_image_tags_label ON image_tags (label COLLATE NOCASE, image_id)")
    op.create_table('image_tagging',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('vocabulary', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vocabulary'], ['vocabularies.name'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model'], ['models.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vocabulary', 'model', 'image_id')
    )
    _text_table(tags=True)
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    _text_table(tags=False)
    for table in ('image_tagging', 'image_tags', 'label_vectors', 'vocabulary_labels', 'vocabularies'):
        op.drop_table(table)
