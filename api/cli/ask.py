"""`vlsearch ask`: a question about one image (visual question answering), or about the whole library."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vlsearch.api.cli.loading import engine_for, load_text_model, open_library, optional_matcher
from vlsearch.api.cli.options import (
    AskImageOpt,
    AskKOpt,
    CandidatesOpt,
    DeviceOpt,
    ItmModelOpt,
    JsonOpt,
    LibraryOpt,
    ModelDirOpt,
    ModelOpt,
    PathFilterOpt,
    QuestionArg,
    ThresholdOpt,
    VqaModelOpt,
    WeightsOpt,
)
from vlsearch.api.cli.output import console, fail
from vlsearch.api.cli.remote import KeyOpt, RemoteAnswer, ServerOpt, call_server


def ask(
    question: QuestionArg,
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    image: AskImageOpt = None,
    k: AskKOpt = 10,
    candidates: CandidatesOpt = 30,
    threshold: ThresholdOpt = 0.5,
    vqa_model: VqaModelOpt = "auto",
    itm_model: ItmModelOpt = "auto",
    path: PathFilterOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Ask a question about one image, or about the whole library.

    With --image: visual question answering on that image. Without: CLIP finds candidates, a VQA model (or an
    image-text matching model) checks each, and the images it says yes to are listed best first. Without either
    model, questions about text are answered from the text OCR read, and the rest by search alone, marked as not
    verified."""
    from vlsearch.captioner import ModelSuite
    from vlsearch.search import Filters
    from vlsearch.search.ask import ask_collection

    if not re.search(r"\w", question):
        raise fail(f"{question!r} is not a question: ask e.g. \"what does the sign say?\" with --image, or "
                   "\"which photos show a dog on a beach?\"")
    if server and image is not None:
        raise fail("with --server, ask about the whole library; --image asks this machine's models")
    if server:
        folder = str(Path(path).absolute()) if path else None
        answer = call_server(server, key, lambda client: client.ask(
            question, k=k, candidates=candidates, threshold=threshold, filters={"path": folder}))
        print_findings(RemoteAnswer(answer), as_json, where="server")
        return
    if image is not None:
        ask_image(question, image_to_ask(image, library), vqa_model, model_dir, device, as_json)
        return
    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    answerer = load_text_model(vqa_model, "answer", model_dir, device)
    matcher = None
    if "answer" not in answerer.tasks or answerer.name == "offline":  # no VQA model: image-text matching, if here
        matcher = optional_matcher(itm_model, model_dir, device)
    try:
        result = ask_collection(engine, ModelSuite(answerer=answerer, matcher=matcher), question, k=k,
                                candidates=candidates, threshold=threshold, filters=Filters(path_prefix=path))
    except ValueError as exc:
        raise fail(exc) from None
    print_findings(result, as_json)


def image_to_ask(image: str, library: Path) -> Path:
    """The file --image names: a path, else the path of the indexed image with that id."""
    target = Path(image)
    if not target.exists() and image.isdigit():
        from vlsearch.library import ImageRecord

        lib = open_library(library)
        with lib.session() as s:
            row = s.get(ImageRecord, int(image))
        if row is None:
            raise fail(f"image {image} is not in the library {lib.root}")
        return Path(row.path)
    if not target.exists():
        raise fail(f"{image}: no such image file or id")
    return target


def ask_image(question: str, target: Path, vqa_model: str, model_dir: Path, device: str, as_json: bool) -> None:
    from vlsearch.captioner import NotSupported
    from vlsearch.images import DecodeError, decode_file

    answerer = load_text_model(vqa_model, "answer", model_dir, device)
    try:
        answer = answerer.answer([decode_file(target)], [question])[0]
    except (DecodeError, NotSupported, ValueError) as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps({"path": str(target), "question": question, "answer": answer, "model": answerer.name},
                         indent=2, ensure_ascii=False))
    else:
        console.print(f"{escape(answer)}\n[dim]{escape(str(target))} · model: {escape(answerer.name)}[/]",
                      highlight=False)


# What the CLI says when nothing checked the images: how to load a model that would (here, or on the server).
UNCHECKED = {"local": "pass --vqa-model blip-vqa-base (or --itm-model blip-itm-base) to check each image",
             "server": "the server has no VQA or image-text matching model to check each image"}


def print_findings(result: Any, as_json: bool, where: str = "local") -> None:
    if as_json:
        print(json.dumps({
            "question": result.question, "retrieval_query": result.retrieval_query, "check": result.check,
            "method": result.method, "model": result.model, "candidates": result.candidates,
            "verified": result.verified, "results": [f.as_dict() for f in result.findings],
        }, indent=2, ensure_ascii=False))
        return
    how = {"vqa": f"asked {result.model} \"{result.check}\"", "itm": f"matched \"{result.check}\" with {result.model}",
           "ocr": f"read the text OCR found at indexing (\"{result.check}\")",
           "retrieval": f"kept the closest by similarity ({result.model}) and by words"}[result.method]
    console.print(f"searched for \"{escape(result.retrieval_query)}\", {escape(how)} of {result.candidates} candidates",
                  highlight=False)
    if not result.verified:
        console.print(f"[yellow]found by search, not verified:[/] {escape(UNCHECKED[where])}", highlight=False)
    if not result.findings:
        console.print("no image passed the check" if result.verified else "nothing close enough was found")
        return
    table = Table(box=None, header_style="bold")
    score = {"vqa": "p(yes)", "itm": "match", "ocr": "read", "retrieval": "rank score"}[result.method]
    for column in ("#", score, "id"):
        table.add_column(column, justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("answer")
    for rank, f in enumerate(result.findings, 1):
        table.add_row(str(rank), f"{f.score:.3f}", str(f.hit.id), Text(f.hit.path), Text(f.answer))
    console.print(table)
