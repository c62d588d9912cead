"""`vlsearch tags`: give a library a vocabulary of labels (the default one, or a file of your own), tag its images
from their stored vectors, and show an image's tags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from vlsearch.api.cli.loading import engine_for, open_library
from vlsearch.api.cli.options import JsonOpt, LibraryOpt, ModelDirOpt, ModelOpt, WeightsOpt
from vlsearch.api.cli.output import RichProgress, console, fail, print_tagged, progress_bar, writer_lock

VocabularyArg = Annotated[Path, typer.Argument(help="Labels: a .txt file (one per line, # comments) or a .csv with "
                                               "a `label` column and an optional `prompt` column (`a photo of {}`).",
                                               exists=True, dir_okay=False, show_default=False)]
NameOpt = Annotated[str | None, typer.Option("--name", help="The vocabulary's name (default: the file's name).")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", min=0.0, max=1.0,
                                             help="The score a label needs to be a tag: its share of the vocabulary "
                                                  "(softmax over its labels).")]
ImageArg = Annotated[str, typer.Argument(help="An indexed image: its path or id.", show_default=False)]


def tag_library(lib, model: str | None, weights: Path | None, model_dir: Path) -> None:
    """Tag the images not yet tagged against each vocabulary, with a progress bar and a summary."""
    from vlsearch.indexer.tagging import Tagger

    engine = engine_for(lib, model, weights, model_dir)
    with writer_lock(lib, "`vlsearch tags`"):
        bar = progress_bar()
        with bar:
            report = Tagger(lib, engine.encoder, RichProgress(bar, "tagging")).run()
    print_tagged(report)


def add_vocabulary(
    file: VocabularyArg,
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    name: NameOpt = None,
    threshold: ThresholdOpt = 0.1,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
) -> None:
    """Add a vocabulary (or replace the one of that name, dropping its tags) and tag every image with it. New
    images are tagged as they are indexed."""
    from vlsearch.indexer.vocabulary import VocabularyError, read_vocabulary, save_vocabulary

    lib = open_library(library)
    try:
        labels = read_vocabulary(file)
        save_vocabulary(lib, name or file.stem, labels, threshold, str(file.resolve()))
    except VocabularyError as exc:
        raise fail(exc) from None
    console.print(f"vocabulary {escape(name or file.stem)}: {len(labels)} labels, threshold {threshold}")
    tag_library(lib, model, weights, model_dir)


def run_tags(library: LibraryOpt, model_dir: ModelDirOpt, model: ModelOpt = None, weights: WeightsOpt = None) -> None:
    """Tag the images that are not tagged yet. A library without a vocabulary gets the default one first (about
    1,100 everyday subjects, scenes and the ImageNet classes)."""
    from vlsearch.indexer.vocabulary import ensure_default

    lib = open_library(library)
    if ensure_default(lib):
        console.print("added the default vocabulary")
    tag_library(lib, model, weights, model_dir)


def list_vocabularies(library: LibraryOpt, as_json: JsonOpt = False) -> None:
    """The library's vocabularies: labels, threshold, images tagged, tags."""
    from vlsearch.indexer.vocabulary import vocabulary_counts

    rows = vocabulary_counts(open_library(library))
    if as_json:
        console.print_json(data=rows)
        return
    table = Table("vocabulary", "labels", "threshold", "images scored", "tags", "source")
    for r in rows:
        table.add_row(escape(r["name"]), str(r["labels"]), f"{r['threshold']:g}", str(r["scored"]), str(r["tags"]),
                      escape(r["source"] or ""))
    console.print(table)


def remove_vocabulary_command(name: Annotated[str, typer.Argument(help="The vocabulary to remove.")],
                              library: LibraryOpt) -> None:
    """Remove a vocabulary and its tags."""
    from vlsearch.indexer.vocabulary import remove_vocabulary

    try:
        remove_vocabulary(open_library(library), name)
    except LookupError as exc:
        raise fail(exc) from None
    console.print(f"removed the vocabulary {escape(name)} and its tags")


def show_tags(image: ImageArg, library: LibraryOpt, as_json: JsonOpt = False) -> None:
    """An image's tags, best first, with the score each reached and the cosine it came from."""
    from vlsearch.search.tags import image_tags, resolve_image

    lib = open_library(library)
    try:
        tags = image_tags(lib, resolve_image(lib, image))
    except LookupError as exc:
        raise fail(exc) from None
    if as_json:
        console.print_json(data=[t.as_dict() for t in tags])
        return
    table = Table("tag", "score", "cosine", "vocabulary")
    for t in tags:
        table.add_row(escape(t.label), f"{t.score:.3f}", f"{t.similarity:.3f}", escape(t.vocabulary))
    console.print(table if tags else "no tags")
