"""A product catalogue into a library: rows → products (streamed, committed in batches) → their images indexed as
any image is (the Indexer) → each product linked to the images it shows.

Idempotent and incremental: every import run has an id, and a product keeps the id of the last run that named it.
The first row naming a product in a run sets all of its fields and images anew (a changed row updates it); later
rows of the same run add images and fill fields. Pruning forgets the products the run did not name."""

from __future__ import annotations

import csv
import json
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from vlsearch.indexer.catalogue import FIELDS, ProductRow, RowProblem, read_catalogue
from vlsearch.indexer.report import IndexReport
from vlsearch.library import Library
from vlsearch.library.schema import ImageRecord, Product, ProductImage, utcnow

BATCH_ROWS = 500  # rows per transaction: a crash loses at most this many, and readers are never blocked long
PROBLEMS_KEPT = 1000  # problems listed in the report; all are counted
IndexRun = Callable[[Path], IndexReport]  # indexes the images a list file (a CSV with a path column) names


@dataclass
class ImportReport:
    rows: int = 0
    new: int = 0  # products the library did not have
    updated: int = 0  # products it had, named again (changed or not)
    pruned: int = 0
    problem_count: int = 0
    problems: list[RowProblem] = field(default_factory=list)  # rows not imported, and images that did not index
    images: int = 0  # distinct image paths and URLs the run's products name
    unlinked: int = 0  # of those, the ones that are not an indexed image (their problems say why)
    indexed: IndexReport | None = None

    def problem(self, line: int, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(RowProblem(line, message))


class CatalogueImport:
    """Imports one catalogue file. `index` runs the Indexer over the listed images (None: only record them, for a
    later import or index run to index)."""

    def __init__(self, library: Library, index: IndexRun | None = None, *, prune: bool = False) -> None:
        self.library = library
        self.index = index
        self.prune = prune
        self.run_id = uuid.uuid4().hex

    def run(self, path: Path, format: str | None = None) -> ImportReport:
        report = ImportReport()
        self._save_rows(read_catalogue(path, format), report)
        if self.prune:
            with self.library.session() as s:
                report.pruned = s.execute(delete(Product).where(Product.seen_in != self.run_id)).rowcount
        with tempfile.TemporaryDirectory(prefix="vlsearch-products-") as tmp:
            listed = Path(tmp) / "images.csv"
            report.images = self._list_images(listed)
            if self.index is not None and report.images:
                report.indexed = self.index(listed)
        self._link(report)
        return report

    def _save_rows(self, rows: Iterable[ProductRow | RowProblem], report: ImportReport) -> None:
        batch: list[ProductRow] = []
        for row in rows:
            report.rows += 1
            if isinstance(row, RowProblem):
                report.problem(row.line, row.message)
                continue
            batch.append(row)
            if len(batch) >= BATCH_ROWS:
                self._save_batch(batch, report)
                batch = []
        if batch:
            self._save_batch(batch, report)

    def _save_batch(self, rows: list[ProductRow], report: ImportReport) -> None:
        with self.library.session() as s:
            for row in rows:
                self._save(s, row, report)

    def _save(self, s: Session, row: ProductRow, report: ImportReport) -> None:
        product = s.get(Product, row.product_id)
        if product is None:
            product = Product(id=row.product_id, seen_in=self.run_id)
            s.add(product)
            report.new += 1
            _set_fields(product, row, replace=True)
        elif product.seen_in != self.run_id:  # first named in this run: the row is the product now
            product.seen_in = self.run_id
            report.updated += 1
            s.execute(delete(ProductImage).where(ProductImage.product_id == row.product_id))
            _set_fields(product, row, replace=True)
        else:  # named again in this run: add what this row says
            _set_fields(product, row, replace=False)
        s.flush()
        have = dict(s.execute(select(ProductImage.ref, ProductImage.position)
                              .where(ProductImage.product_id == row.product_id)).all())
        position = max(have.values(), default=-1) + 1
        for ref in row.images:
            if ref not in have:
                s.add(ProductImage(product_id=row.product_id, position=position, ref=ref, line=row.line))
                have[ref] = position
                position += 1

    def _run_images(self):
        return (select(ProductImage.ref).distinct().join(Product, Product.id == ProductImage.product_id)
                .where(Product.seen_in == self.run_id))

    def _list_images(self, listed: Path) -> int:
        """The run's images, written as a list the Indexer reads; how many."""
        count = 0
        with self.library.session() as s, listed.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["path"])
            for (ref,) in s.execute(self._run_images()):
                out.writerow([ref])
                count += 1
        return count

    def _link(self, report: ImportReport) -> None:
        """Each of the run's product images to the indexed image at its path (or none), and a problem for each one
        that is not indexed."""
        indexed = (select(ImageRecord.id).where(ImageRecord.path == ProductImage.ref, ImageRecord.status == "ok")
                   .scalar_subquery())
        run_products = select(Product.id).where(Product.seen_in == self.run_id)
        with self.library.session() as s:
            s.execute(update(ProductImage).where(ProductImage.product_id.in_(run_products))
                      .values(image_id=indexed).execution_options(synchronize_session=False))
            missing = s.execute(
                select(ProductImage.line, ProductImage.ref, func.max(ImageRecord.error))
                .join(ImageRecord, ImageRecord.path == ProductImage.ref, isouter=True)
                .where(ProductImage.product_id.in_(run_products), ProductImage.image_id.is_(None))
                .group_by(ProductImage.ref).order_by(ProductImage.line))
            for line, ref, error in missing:
                report.unlinked += 1
                report.problem(line or 0, f"image {ref}: {error or 'not indexed'}")


def _set_fields(product: Product, row: ProductRow, *, replace: bool) -> None:
    """The row's fields onto the product: all of them (`replace`), or those the row has."""
    for name in FIELDS[1:]:  # all but product_id
        value = getattr(row, name)
        if replace or value is not None:
            setattr(product, name, value)
    attributes = {} if replace else json.loads(product.attributes or "{}")
    product.attributes = json.dumps(attributes | row.attributes, sort_keys=True, ensure_ascii=False)
    product.updated_at = utcnow()

