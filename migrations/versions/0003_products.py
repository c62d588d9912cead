"""products and their images; product text (title, brand, category, description) in the keyword index: in each
image's row of image_text, and per product in product_text

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 21:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

NAME = "substr({p}, length(rtrim({p}, replace({p}, '/', ''))) + 1)"
CAPTIONS = "coalesce((SELECT group_concat(text, ' ') FROM captions WHERE image_id = {i}), '')"
OCR = "coalesce((SELECT text FROM ocr WHERE image_id = {i}), '')"
PRODUCTS = ("coalesce((SELECT group_concat(coalesce(p.title, '') || ' ' || coalesce(p.brand, '') || ' ' || "
            "coalesce(p.category, '') || ' ' || coalesce(p.description, ''), ' ') "
            "FROM product_images pi JOIN products p ON p.id = pi.product_id WHERE pi.image_id = {i}), '')")


def _refresh(column: str, value: str, row: str) -> str:
    return f"UPDATE image_text SET {column} = {value.format(i=row)} WHERE rowid = {row};"


def triggers(products: bool) -> dict[str, str]:
    """The triggers keeping image_text in step: with the product column and its sources, or as in 0002."""
    column, value = (", product", ", ''") if products else ("", "")
    kept = {
        "image_text_image_insert": f"""
            AFTER INSERT ON images BEGIN
                INSERT INTO image_text(rowid, name, caption, ocr{column})
                VALUES (new.id, {NAME.format(p='new.path')}, '', ''{value});
            END""",
        "image_text_image_rename": f"""
            AFTER UPDATE OF path ON images BEGIN
                UPDATE image_text SET name = {NAME.format(p='new.path')} WHERE rowid = new.id;
            END""",
        "image_text_image_delete": """
            AFTER DELETE ON images BEGIN
                DELETE FROM image_text WHERE rowid = old.id;
            END""",
        **{f"image_text_caption_{event.lower()}": f"AFTER {event} ON captions BEGIN "
           f"{_refresh('caption', CAPTIONS, row + '.image_id')} END"
           for event, row in (("INSERT", "new"), ("UPDATE", "new"), ("DELETE", "old"))},
        **{f"image_text_ocr_{event.lower()}": f"AFTER {event} ON ocr BEGIN "
           f"{_refresh('ocr', OCR, row + '.image_id')} END"
           for event, row in (("INSERT", "new"), ("UPDATE", "new"), ("DELETE", "old"))},
    }
    return kept | (PRODUCT_TRIGGERS if products else {})


PRODUCT_TRIGGERS = {
    "image_text_product_image_insert": f"""
        AFTER INSERT ON product_images WHEN new.image_id IS NOT NULL BEGIN
            {_refresh('product', PRODUCTS, 'new.image_id')}
        END""",
    "image_text_product_image_update": f"""
        AFTER UPDATE OF image_id ON product_images BEGIN
            {_refresh('product', PRODUCTS, 'old.image_id')}
            {_refresh('product', PRODUCTS, 'new.image_id')}
        END""",
    "image_text_product_image_delete": f"""
        AFTER DELETE ON product_images WHEN old.image_id IS NOT NULL BEGIN
            {_refresh('product', PRODUCTS, 'old.image_id')}
        END""",
    "image_text_product_update": f"""
        AFTER UPDATE OF title, brand, category, description ON products BEGIN
            UPDATE image_text SET product = {PRODUCTS.format(i='image_text.rowid')}
            WHERE rowid IN (SELECT image_id FROM product_images WHERE product_id = new.id AND image_id IS NOT NULL);
            UPDATE product_text SET title = new.title, brand = new.brand, category = new.category,
                description = new.description WHERE rowid = new.rowid;
        END""",
    "product_text_insert": """
        AFTER INSERT ON products BEGIN
            INSERT INTO product_text(rowid, title, brand, category, description)
            VALUES (new.rowid, new.title, new.brand, new.category, new.description);
        END""",
    "product_text_delete": """
        AFTER DELETE ON products BEGIN
            DELETE FROM product_text WHERE rowid = old.rowid;
        END""",
}


def _text_table(products: bool) -> None:
    """image_text made again (FTS5 tables cannot gain a column), its triggers, and its rows from the sources."""
    op.execute("DROP TABLE image_text")
    # Porter stemming so "dogs" finds "dog"; diacritics folded so "cafe" finds "café".
    op.execute(f"CREATE VIRTUAL TABLE image_text USING fts5(name, caption, ocr{', product' if products else ''}, "
               "tokenize = 'porter unicode61 remove_diacritics 2')")
    for name, body in triggers(products).items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    column, value = (", product", f", {PRODUCTS.format(i='id')}") if products else ("", "")
    op.execute(f"INSERT INTO image_text(rowid, name, caption, ocr{column}) SELECT id, {NAME.format(p='path')}, "
               f"{CAPTIONS.format(i='id')}, {OCR.format(i='id')}{value} FROM images")


def upgrade() -> None:
    op.create_table('products',
    sa.Column('id', sa.String(length=256), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('brand', sa.Text(), nullable=True),
    sa.Column('category', sa.Text(), nullable=True),
    sa.Column('price', sa.Float(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('attributes', sa.Text(), nullable=False),
    sa.Column('seen_in', sa.String(length=32), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    for column in ('price', 'seen_in'):
        op.create_index(f'ix_products_{column}', 'products', [column])
    for column in ('brand', 'category'):  # conditions compare them without case (search/conditions.py)
        op.execute(f"CREATE INDEX ix_products_{column} ON products ({column} COLLATE NOCASE)")
    op.create_table('product_images',
    sa.Column('product_id', sa.String(length=256), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('ref', sa.Text(), nullable=False),
    sa.Column('line', sa.Integer(), nullable=True),
    sa.Column('image_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('product_id', 'position')
    )
    op.create_index('ix_product_images_ref', 'product_images', ['ref'])
    op.execute("CREATE VIRTUAL TABLE product_text USING fts5(title, brand, category, description, "
               "tokenize = 'porter unicode61 remove_diacritics 2')")
    op.create_index('ix_product_images_image_id', 'product_images', ['image_id'])
    for name in triggers(products=False):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    _text_table(products=True)


def downgrade() -> None:
    for name in triggers(products=True):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE product_text")
    op.drop_table('product_images')
    op.drop_table('products')
    _text_table(products=False)
