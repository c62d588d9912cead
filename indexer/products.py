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
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from vlsearch.indexer.catalogue import FIELDS, ProductRow, RowProblem, read_catalogue
from vlsearch.indexer.report import IndexReport
from vlsearch.library import Library
from vlsearch.library.schema import ImageRecord, Product, ProductImage, utcnow
from vlsearch.library.sql import in_chunks

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
        """The rows in one transaction, with the batch's products and their pictures read in a few queries first
        (read per row, 100k rows took 98 s; bench products)."""
        with self.library.session() as s:
            products, pictures = self._read_batch(s, list(dict.fromkeys(row.product_id for row in rows)))
            added: list[dict] = []  # the new pictures, inserted together: 300k ORM objects took a third of the time
            for row in rows:
                added += self._save(s, products, pictures[row.product_id], row, report)
            s.flush()  # the products first: the pictures refer to them
            if added:
                s.execute(insert(ProductImage), added)

    def _read_batch(self, s: Session, ids: list[str]) -> tuple[dict[str, Product], dict[str, dict[str, int]]]:
        """The products of `ids` the library has, and their pictures (ref -> position); the pictures of those
        first named in this run are deleted instead: the run's rows replace them."""
        products = {p.id: p for chunk in in_chunks(ids)
                    for p in s.scalars(select(Product).where(Product.id.in_(chunk)))}
        renamed = {pid for pid, p in products.items() if p.seen_in != self.run_id}
        for chunk in in_chunks(list(renamed)):
            s.execute(delete(ProductImage).where(ProductImage.product_id.in_(chunk)))
        pictures: dict[str, dict[str, int]] = defaultdict(dict)
        picture = select(ProductImage.product_id, ProductImage.ref, ProductImage.position)
        for chunk in in_chunks([pid for pid in products if pid not in renamed]):
            for pid, ref, position in s.execute(picture.where(ProductImage.product_id.in_(chunk))):
                pictures[pid][ref] = position
        return products, pictures

    def _save(self, s: Session, products: dict[str, Product], have: dict[str, int], row: ProductRow,
              report: ImportReport) -> list[dict]:
        """One row onto its product (`products` holds the batch's, `have` the product's pictures so far); the
        product_images rows to add."""
        product = products.get(row.product_id)
        if product is None:
            product = products[row.product_id] = Product(id=row.product_id, seen_in=self.run_id)
            s.add(product)
            report.new += 1
            _set_fields(product, row, replace=True)
        elif product.seen_in != self.run_id:  # first named in this run: the row is the product now
            product.seen_in = self.run_id
            report.updated += 1
            _set_fields(product, row, replace=True)
        else:  # named again in this run: add what this row says
            _set_fields(product, row, replace=False)
        position, added = max(have.values(), default=-1) + 1, []
        for ref in row.images:
            if ref not in have:
                added.append({"product_id": row.product_id, "position": position, "ref": ref, "line": row.line})
                have[ref] = position
                position += 1
        return added

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

