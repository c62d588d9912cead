"""SQLAlchemy models of a library. Every change here needs an Alembic migration in migrations/versions."""

from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, ForeignKey, ForeignKeyConstraint, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ImageRecord(Base):
    """One file seen by the indexer: decoded fine (status ok) or not (status error, with the reason)."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float)
    # Pixel size as stored in the file, and as shown once EXIF orientation is applied.
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    display_width: Mapped[int | None] = mapped_column(Integer)
    display_height: Mapped[int | None] = mapped_column(Integer)
    orientation: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    camera_make: Mapped[str | None] = mapped_column(String(128))
    camera_model: Mapped[str | None] = mapped_column(String(128))
    thumbnail: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), index=True, default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    embeddings: Mapped[list["Embedding"]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def camera(self) -> str | None:
        parts = [p for p in (self.camera_make, self.camera_model) if p]
        return " ".join(parts) or None


class ModelRecord(Base):
    """A model whose vectors this library holds. `generation` changes with every change to those vectors,
    so a FAISS file saved at another generation is known to be stale."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Embedding(Base):
    """An image's vector under one model, L2-normalised float16: the source every FAISS index is built from."""

    __tablename__ = "embeddings"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    image: Mapped[ImageRecord] = relationship(back_populates="embeddings")


class Caption(Base):
    """What a caption model says an image shows. Dropped when the file's content changes."""

    __tablename__ = "captions"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OcrText(Base):
    """The text OCR read in an image ("" when it found none, so a read image is not read again)."""

    __tablename__ = "ocr"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    engine: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# Keyword search: the FTS5 table `image_text` (file name, captions, OCR text, the title, brand, category and
# description of the products an image shows, and its tags; rowid = images.id) is kept in step with images,
# captions, ocr, products, product_images and image_tags by SQL triggers (migrations/versions/0003 and 0004), so
# no code path can forget it. It is
# not mapped here: FTS5 virtual tables have no SQLAlchemy model. A migration that rebuilds `images` in batch mode
# drops its triggers and must create them again.
TEXT_TABLE = "image_text"
PRODUCT_TEXT_TABLE = "product_text"  # a product's title, brand, category, description; rowid = products.rowid


class Root(Base):
    """A folder the user asked to index: pruning and (later) file serving stay inside these."""

    __tablename__ = "roots"

    path: Mapped[str] = mapped_column(Text, primary_key=True)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Product(Base):
    """A catalogue's product (vlsearch products import): what it is, and the run of the import that last saw it, so
    an import with pruning forgets the products its file no longer names."""

    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)  # the catalogue's product_id
    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    brand: Mapped[str | None] = mapped_column(Text)  # indexed NOCASE (migration 0003), as conditions compare it
    category: Mapped[str | None] = mapped_column(Text)
    price: Mapped[float | None] = mapped_column(Float, index=True)
    currency: Mapped[str | None] = mapped_column(String(3))
    url: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[str] = mapped_column(Text, default="{}")  # a JSON object: the catalogue's other columns
    seen_in: Mapped[str] = mapped_column(String(32), index=True)  # the import run that last named it
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    images: Mapped[list["ProductImage"]] = relationship(
        back_populates="product", cascade="all, delete-orphan", passive_deletes=True, order_by="ProductImage.position"
    )


class ProductImage(Base):
    """One of a product's pictures: as the catalogue gave it (a path or URL, at `line`), and the indexed image it
    became (none while not indexed, or when it could not be read). An image may show several products."""

    __tablename__ = "product_images"

    product_id: Mapped[str] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(Text, index=True)
    line: Mapped[int | None] = mapped_column(Integer)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"), index=True)

    product: Mapped[Product] = relationship(back_populates="images")


class Vocabulary(Base):
    """A list of text labels images are tagged with (vlsearch tags vocab): the default one or a library's own, with
    the score a label must reach to be a tag (indexer/tagging.py)."""

    __tablename__ = "vocabularies"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(Text)  # the file it was read from, or "default"
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class VocabularyLabel(Base):
    """One label of a vocabulary, and the text its vector is computed from (`a photo of a cat`)."""

    __tablename__ = "vocabulary_labels"

    vocabulary: Mapped[str] = mapped_column(ForeignKey("vocabularies.name", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)


class LabelVector(Base):
    """A label's text vector under one model, float16 as image vectors are: computed once, not per tagging run."""

    __tablename__ = "label_vectors"
    __table_args__ = (ForeignKeyConstraint(["vocabulary", "label"],
                                           ["vocabulary_labels.vocabulary", "vocabulary_labels.label"],
                                           ondelete="CASCADE"),)

    vocabulary: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    model: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ImageTag(Base):
    """A tag: a label of a vocabulary that an image's vector under `model` scored at least the vocabulary's
    threshold for. `score` is the label's share of the vocabulary (a softmax; for a model with its own classifier, the
    default vocabulary's labels score its probability), `similarity` the cosine of the image's and label's vectors.
    Dropped by a trigger when the image's vector changes (migrations/versions/0004)."""

    __tablename__ = "image_tags"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    vocabulary: Mapped[str] = mapped_column(ForeignKey("vocabularies.name", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)  # indexed NOCASE with image_id (migration 0004)
    model: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    similarity: Mapped[float] = mapped_column(Float)


class ImageTagging(Base):
    """That an image's vector under `model` was scored against a vocabulary (whether or not any label became a
    tag): images without this row are the ones a tagging run scores."""

    __tablename__ = "image_tagging"

    vocabulary: Mapped[str] = mapped_column(ForeignKey("vocabularies.name", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
