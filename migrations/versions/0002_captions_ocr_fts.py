"""captions, OCR text, and the FTS5 keyword index over file names, captions and OCR text

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 01:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# The file name: what follows the last '/' (rtrim strips the trailing run of non-'/' characters).
NAME = "substr({p}, length(rtrim({p}, replace({p}, '/', ''))) + 1)"
CAPTIONS = "coalesce((SELECT group_concat(text, ' ') FROM captions WHERE image_id = {i}), '')"
OCR = "coalesce((SELECT text FROM ocr WHERE image_id = {i}), '')"

TRIGGERS = {
    "image_text_image_insert": f"""
        AFTER INSERT ON images BEGIN
            INSERT INTO image_text(rowid, name, caption, ocr) VALUES (new.id, {NAME.format(p='new.path')}, '', '');
        END""",
    "image_text_image_rename": f"""
        AFTER UPDATE OF path ON images BEGIN
            UPDATE image_text SET name = {NAME.format(p='new.path')} WHERE rowid = new.id;
        END""",
    "image_text_image_delete": """
        AFTER DELETE ON images BEGIN
            DELETE FROM image_text WHERE rowid = old.id;
        END""",
    **{
        f"image_text_caption_{event.lower()}": f"""
        AFTER {event} ON captions BEGIN
            UPDATE image_text SET caption = {CAPTIONS.format(i=row + '.image_id')} WHERE rowid = {row}.image_id;
        END"""
        for event, row in (("INSERT", "new"), ("UPDATE", "new"), ("DELETE", "old"))
    },
    **{
        f"image_text_ocr_{event.lower()}": f"""
        AFTER {event} ON ocr BEGIN
            UPDATE image_text SET ocr = {OCR.format(i=row + '.image_id')} WHERE rowid = {row}.image_id;
        END"""
        for event, row in (("INSERT", "new"), ("UPDATE", "new"), ("DELETE", "old"))
    },
}


def upgrade() -> None:
    op.create_table('captions',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'model')
    )
    op.create_table('ocr',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('engine', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id')
    )
    # Porter stemming so "dogs" finds "dog"; diacritics folded so "cafe" finds "café".
    op.execute("CREATE VIRTUAL TABLE image_text USING fts5(name, caption, ocr, "
               "tokenize = 'porter unicode61 remove_diacritics 2')")
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"INSERT INTO image_text(rowid, name, caption, ocr) SELECT id, {NAME.format(p='path')}, '', '' "
               "FROM images")


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS image_text")
    op.drop_table('ocr')
    op.drop_table('captions')
