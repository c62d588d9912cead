"""`vlsearch export` and `vlsearch import`: a library as Parquet files, and Parquet files into a library."""

from __future__ import annotations

from rich.markup import escape

from vlsearch.api.cli.loading import open_library
from vlsearch.api.cli.options import (
    ExportModelOpt,
    ImportModelOpt,
    LibraryOpt,
    OutArg,
    OverwriteOpt,
    RowsPerFileOpt,
    SourcesArg,
    ThumbnailsOpt,
)
from vlsearch.api.cli.output import RichProgress, console, fail, print_failures, progress_bar, writer_lock


def export_library(
    out: OutArg,
    library: LibraryOpt,
    model: ExportModelOpt = None,
    thumbnails: ThumbnailsOpt = False,
    rows_per_file: RowsPerFileOpt = 100_000,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export the library to Parquet: one row per image, with its path, metadata, vector, caption, OCR text and tags.

    OUT becomes a folder of part files (part-00000.parquet, ...) that DuckDB, Spark, pandas and vector databases
    read, for example in DuckDB:

        SELECT path, caption FROM read_parquet('out/*.parquet') WHERE caption ILIKE '%beach%';

    The embedding column holds L2-normalised float32 vectors; the schema metadata key "vlsearch" names the model
    and dimension. `vlsearch import` reads the folder back (into this library or another)."""
    from vlsearch.library import LibraryError
    from vlsearch.library.parquet_io import export_parquet

    lib = open_library(library)
    with progress_bar() as progress:
        try:
            report = export_parquet(lib, out, model, thumbnails=thumbnails, rows_per_file=rows_per_file,
                                    overwrite=overwrite, progress=RichProgress(progress, "exporting"))
        except KeyboardInterrupt:
            raise fail(f"interrupted; the part files in {out} are complete but the export is not: run it again "
                       "with --overwrite", code=130) from None
        except (LibraryError, OSError) as exc:
            raise fail(exc) from None
    console.print(
        f"{report.rows} images ({report.errors} unreadable), {report.vectors} vectors of {escape(report.model)}, "
        f"{report.captions} captions, {report.ocr} OCR texts, {report.thumbnails} thumbnails → "
        f"{escape(str(report.out))} ({len(report.files)} part file{'s' if len(report.files) != 1 else ''}) "
        f"in {report.seconds:.1f}s"
    )


def import_library(sources: SourcesArg, library: LibraryOpt, model: ImportModelOpt = None) -> None:
    """Import Parquet files written by `vlsearch export`, by distributed indexing, or by other tools.

    Rows are matched by path: new paths are added, known ones updated (a different sha256 means the file changed:
    its old captions, OCR text and other models' vectors are dropped), rows that say nothing new are left alone,
    so importing the same files twice changes nothing. Only `path` is required; other columns are those of
    `vlsearch export`, for example a file with just path and embedding, written by pandas:

        vlsearch import vectors.parquet --model ViT-B-32

    Invalid rows (empty path, wrong vector length, NaN) are skipped and listed. A library that does not exist
    yet is created."""
    from vlsearch.library import LibraryError
    from vlsearch.library.parquet_io import import_parquet

    if model:
        from vlsearch.encoders import canonical_name

        model = canonical_name(model) or model  # as the library records it: ViT-B-32 -> ViT-B-32/laion2b_s34b_b79k
    lib = open_library(library, create=True)
    with writer_lock(lib, "`vlsearch import`"), progress_bar() as progress:
        try:
            report = import_parquet(lib, sources, model=model, progress=RichProgress(progress, "importing"))
        except KeyboardInterrupt:
            raise fail("interrupted; the rows imported so far are kept, run the same command again to finish",
                       code=130) from None
        except (LibraryError, OSError) as exc:
            raise fail(exc) from None
    models = f" with {escape(', '.join(report.models))}" if report.models else ""
    console.print(
        f"{report.read} rows: [green]{report.added} added[/], {report.updated} updated, {report.unchanged} "
        f"unchanged, [red]{report.skipped} skipped[/] in {report.seconds:.1f}s{models} → {escape(str(lib.root))}"
    )
    print_failures(report.reasons)
