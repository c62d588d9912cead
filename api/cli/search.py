"""`vlsearch search` and `vlsearch similar`: find images by words, by an example image, or both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlsearch.api.cli.loading import engine_for, load_text_model, open_library
from vlsearch.api.cli.options import (
    AfterOpt,
    BeforeOpt,
    BoxOpt,
    CameraOpt,
    GroupOpt,
    ImageOpt,
    ImageWeightOpt,
    ItmModelOpt,
    JsonOpt,
    KOpt,
    LibraryOpt,
    MinScoreOpt,
    ModelDirOpt,
    ModelOpt,
    ModeOpt,
    NegativesOpt,
    NotWeightOpt,
    PathFilterOpt,
    RerankOpt,
    SortOpt,
    TagOpt,
    TargetArg,
    TextArg,
    TextWeightOpt,
    WeightsOpt,
    WhereOpt,
)
from vlsearch.api.cli.output import fail, parse_box, parse_date, print_hits
from vlsearch.api.cli.products import parse_where
from vlsearch.api.cli.remote import KeyOpt, ServerOpt, ask_server, search_request


def search(
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    text: TextArg = None,
    image: ImageOpt = None,
    box: BoxOpt = None,
    negatives: NegativesOpt = None,
    k: KOpt = 20,
    min_score: MinScoreOpt = None,
    path: PathFilterOpt = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    camera: CameraOpt = None,
    tag: TagOpt = None,
    where: WhereOpt = None,
    group: GroupOpt = None,
    sort: SortOpt = "score",
    text_weight: TextWeightOpt = 1.0,
    image_weight: ImageWeightOpt = 1.0,
    not_weight: NotWeightOpt = 0.5,
    mode: ModeOpt = "vector",
    rerank: RerankOpt = 0,
    itm_model: ItmModelOpt = "auto",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Find images by text, by an example image, or both; --not terms push results away."""
    from vlsearch.images import DecodeError, decode_file
    from vlsearch.search import Filters, SearchQuery

    if not text and image is None:
        raise fail("give words to search for, --image PATH, or both")
    if server:
        request = search_request(text, image, {
            "path": path, "after": after, "before": before, "camera": camera, "min_score": min_score,
            "where": where, "tags": tag, "negatives": list(negatives or ()) or None, "k": k, "sort": sort,
            "mode": mode, "rerank": rerank, "text_weight": text_weight, "image_weight": image_weight,
            "negative_weight": not_weight, "group": group, "box": list(parse_box(box) or ()) or None})
        print_hits(ask_server(server, key, lambda client: client.search_combined(request)), as_json)
        return
    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    try:
        query_image = decode_file(image) if image else None
        query = SearchQuery(
            text=text, image=query_image, negatives=tuple(negatives or ()), k=k, sort=sort, mode=mode, rerank=rerank,
            text_weight=text_weight, image_weight=image_weight, negative_weight=not_weight, group=group,
            box=parse_box(box),
            filters=Filters(path_prefix=path, after=parse_date(after, "--after"),
                            before=parse_date(before, "--before"), camera=camera, min_score=min_score,
                            where=parse_where(where), tags=tuple(tag or ())),
        )
        if rerank:
            engine.matcher = load_text_model(itm_model, "match", model_dir)
        hits = engine.search(query)
    except (DecodeError, ValueError) as exc:
        raise fail(exc) from None
    print_hits(hits, as_json)


def similar(
    target: TargetArg,
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    k: Annotated[int, typer.Option("--k", "-k", min=1)] = 20,
    path: PathFilterOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Find images that look like an indexed image or an image file (reverse image search)."""
    from vlsearch.images import DecodeError
    from vlsearch.search import Filters

    if server:
        print_hits(similar_on_server(server, key, target, k, path), as_json)
        return
    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    ref: int | Path = int(target) if target.isdigit() and not Path(target).exists() else Path(target)
    if isinstance(ref, Path) and not ref.exists():
        raise fail(f"{target}: no such image id or file")
    try:
        hits = engine.similar(ref, k=k, filters=Filters(path_prefix=path))
    except (DecodeError, LookupError, ValueError) as exc:
        raise fail(exc) from None
    print_hits(hits, as_json)


def similar_on_server(server: str, key: str | None, target: str, k: int, path: str | None) -> list:
    """`similar` through a server: an id as GET /images/{id}/similar, a file as an image search that leaves the
    file itself out, as the local command does with an indexed file."""
    from vlsearch.api.schemas import MAX_K

    folder = str(Path(path).absolute()) if path else None
    if target.isdigit() and not Path(target).exists():
        return ask_server(server, key, lambda client: client.similar(int(target), k=k, path=folder))
    request = search_request(None, Path(target), {"path": folder, "after": None, "before": None, "camera": None,
                                                  "min_score": None, "where": None, "tags": None,
                                                  "k": min(k + 1, MAX_K)})
    itself = str(Path(target).resolve())
    return [h for h in ask_server(server, key, lambda client: client.search_combined(request))
            if h.path != itself][:k]
