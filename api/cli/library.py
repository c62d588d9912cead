"""Looking after a library: `vlsearch status`, `vlsearch reindex` and `vlsearch db upgrade`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from vlsearch.api.cli.loading import open_library
from vlsearch.api.cli.options import IndexKindOpt, JsonOpt, LatencyOpt, LibraryOpt, MemoryOpt, OpqOpt, QuantizerOpt
from vlsearch.api.cli.output import console, fail
from vlsearch.api.cli.remote import KeyOpt, ServerOpt, call_server

if TYPE_CHECKING:
    from vlsearch.library import VectorIndex


def status(library: LibraryOpt, as_json: JsonOpt = False, server: ServerOpt = None, key: KeyOpt = None) -> None:
    """Counts of images, errors and vectors per model, and the library's size on disk."""
    from sqlalchemy import select

    from vlsearch.library import ImageRecord

    if server:
        st = call_server(server, key, lambda client: client.stats())
        show_status(summary_of(st.library, st), [], as_json)
        return
    lib = open_library(library)
    st = lib.stats()
    with lib.session() as s:
        errors = s.execute(
            select(ImageRecord.path, ImageRecord.error).where(ImageRecord.status == "error").limit(10)
        ).all()
    show_status(summary_of(str(st.root), st), errors, as_json)


def summary_of(library: str, st) -> dict:
    """`status`'s summary of a library's stats, read here (LibraryStats) or from a server (the API's Stats)."""
    return {"library": library, "images": st.images, "errors": st.errors, "disk_bytes": st.disk_bytes,
            "schema_revision": st.schema_revision,
            "models": [{"name": m.name, "dim": m.dim, "vectors": m.vectors} for m in st.models],
            "captions": st.captions, "ocr": st.ocr}


def show_status(st: dict, errors: list, as_json: bool) -> None:
    """`status`'s JSON, or its lines: the library, its counts, the first errors (path, reason)."""
    if as_json:
        print(json.dumps(st, indent=2))
        return
    console.print(f"library   {escape(st['library'])}  (schema {st['schema_revision']})")
    console.print(f"images    {st['images']} indexed, {st['errors']} could not be read")
    for m in st["models"]:
        console.print(f"model     {escape(m['name'])}: {m['vectors']} vectors of dimension {m['dim']}")
    for name, count in st["captions"].items():
        console.print(f"captions  {escape(name)}: {count} images")
    console.print(f"ocr       {st['ocr']} images read")
    console.print(f"disk      {st['disk_bytes'] / 1e6:.1f} MB")
    for p, reason in errors:
        console.print(f"  [red]✗[/] {escape(p)}: {escape(reason or '')}", highlight=False)


def reindex(
    library: LibraryOpt,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's index.")] = None,
    kind: IndexKindOpt = "auto",
    memory: MemoryOpt = None,
    latency_ms: LatencyOpt = None,
    opq: OpqOpt = False,
    quantizer: QuantizerOpt = "flat",
) -> None:
    """Rebuild the FAISS index files from the vectors stored in SQLite."""
    from vlsearch.library import LibraryError
    from vlsearch.library.vectors import parse_size

    try:
        budget = parse_size(memory) if memory is not None else None
    except ValueError as exc:
        raise fail(f"--memory: {exc}") from None
    if latency_ms is not None and latency_ms <= 0:
        raise fail(f"--latency-ms must be more than 0, not {latency_ms}")
    lib = open_library(library)
    names = [model] if model else [m.name for m in lib.models()]
    for name in names:
        try:
            index = lib.rebuild_index(name, kind, memory_budget=budget, latency_target_ms=latency_ms, opq=opq,
                                      quantizer=quantizer)
        except (LibraryError, ValueError) as exc:
            raise fail(exc) from None
        print_rebuilt(name, index, lib.index_path(name), budget)


def print_rebuilt(name: str, index: VectorIndex, path: Path, budget: int | None) -> None:
    """What was built: its kind and size, the search settings tuned, the recall and latency measured."""
    from vlsearch.library.vectors import format_bytes

    info = index.build_info
    console.print(f"{escape(name)}: {index.ntotal} vectors, {index.kind} index ({info.get('factory', '')}) "
                  f"→ {escape(str(path))}")
    size = info.get("file_bytes") or info.get("estimated_bytes") or 0
    facts = [f"{format_bytes(size)}, {size / max(index.ntotal, 1):,.0f} bytes/vector"]
    if budget is not None:
        facts.append(f"budget {format_bytes(budget)}")
    if index.params:
        facts.append(", ".join(f"{k} {v}" for k, v in index.params.items()))
    if index.recall:
        facts.append(f"recall@10 {index.recall['stored']:.3f} (stored) / {index.recall['text_like']:.3f} "
                     "(text-like)")
    if "p50_ms" in info:
        facts.append(f"p50 {info['p50_ms']:.2f} ms")
    console.print("  " + "; ".join(facts))
    if info.get("conflict"):
        console.print(f"  [yellow]latency target not met at the recall target:[/] {escape(info['conflict'])}")


def db_upgrade(library: LibraryOpt) -> None:
    """Apply pending schema migrations (opening a library does this too)."""
    from vlsearch.library import migrate

    lib = open_library(library)
    console.print(f"{escape(str(lib.root))}: schema at revision {migrate.current_revision(lib.engine)} (head)")
