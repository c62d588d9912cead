"""The CLI against a server instead of a library (`--server URL`): the same questions asked through
vlsearch.client, answers shown as the local commands show them, the server's errors worded as CLI errors."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from vlsearch.api.cli.output import fail

ServerOpt = Annotated[str | None, typer.Option(
    "--server", envvar="VLSEARCH_SERVER", help="Ask a running `vlsearch serve` (its URL) instead of opening a "
    "library: the server's library and models answer.", show_default="$VLSEARCH_SERVER, else the local library")]
KeyOpt = Annotated[str | None, typer.Option(
    "--key", envvar="VLSEARCH_API_KEY", help="The server's API key, where it needs one (reads, if it closes them).",
    show_default="$VLSEARCH_API_KEY")]


class RemoteHit:
    """An API hit with the local hit's attributes and JSON, so print_hits shows both alike (`thumbnail` is the
    server's thumbnail URL)."""

    def __init__(self, hit: Any) -> None:
        self.hit = hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hit, name)

    def as_dict(self) -> dict:
        h = self.hit
        out = {"id": h.id, "path": h.path, "score": round(h.score, 6), "width": h.width, "height": h.height,
               "taken_at": h.taken_at.isoformat() if h.taken_at else None, "camera": h.camera,
               "thumbnail": h.thumbnail_url, "caption": h.caption, "ocr_text": h.ocr_text,
               "match_score": None if h.match_score is None else round(h.match_score, 6)}
        if h.product is not None:
            out["product"] = h.product.model_dump(mode="json")
        return out


def ask_server(url: str, key: str | None, question: Any) -> list[RemoteHit]:
    """`question(client)`'s hits from the server, adapted for print_hits."""
    return [RemoteHit(h) for h in call_server(url, key, question).hits]


def image_base64(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror or exc}") from None


def search_request(text: str | None, image: Path | None, options: dict[str, Any]) -> Any:
    """The POST /search body of a local search's options, or a CLI error naming the option the server refuses."""
    from pydantic import ValidationError

    from vlsearch.api.schemas import SearchRequest

    filters = {"path": options.pop("path"), "after": options.pop("after"), "before": options.pop("before"),
               "camera": options.pop("camera"), "min_score": options.pop("min_score"),
               "where": list(options.pop("where") or ()), "tags": list(options.pop("tags") or ())}
    if filters["path"] is not None:
        filters["path"] = os.path.abspath(filters["path"])
    body = {"text": text, "image": image_base64(image) if image else None, "filters": filters, **options}
    try:
        return SearchRequest.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise fail(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def call_server(url: str, key: str | None, question: Any) -> Any:
    """`question(client)` against the server; connection and API errors become CLI errors."""
    from vlsearch.client import ApiError, Client, ConnectionFailed

    try:
        with Client(url, key) as client:
            return question(client)
    except ConnectionFailed as exc:
        raise fail(f"cannot reach the server at {url}: {exc} (is `vlsearch serve` running there?)") from None
    except ApiError as exc:
        hint = " (give its key with --key or $VLSEARCH_API_KEY)" if exc.status == 401 else ""
        raise fail(f"the server says: {exc.detail}{hint}") from None
    except OSError as exc:  # a file to upload that cannot be read
        raise fail(f"{exc.filename or 'a file'}: {exc.strerror or exc}") from None


CAPTION_BATCH = 16  # files a request: under the server's max_batch default (32), a few MB of photos


def caption_on_server(url: str, key: str | None, images: list[Path], prompt: str | None) -> list[dict[str, Any]]:
    """The local `caption FILES` results, the captions written by the server (POST /caption/batch)."""
    results, sendable = [], []
    for path in images:
        if path.is_dir():
            results.append({"path": str(path), "error": "is a folder: name image files"})
        elif not path.exists():
            results.append({"path": str(path), "error": "no such file"})
        else:
            sendable.append(path)
    for start in range(0, len(sendable), CAPTION_BATCH):
        chunk = sendable[start:start + CAPTION_BATCH]
        answer = call_server(url, key, lambda client, chunk=chunk: client.caption_batch(chunk, prompt=prompt))
        for item in answer.results:
            path = str(chunk[item.index])
            results.append({"path": path, "caption": item.caption, "model": item.model} if item.error is None
                           else {"path": path, "error": item.detail or item.error})
    order = {str(p): i for i, p in enumerate(images)}
    return sorted(results, key=lambda r: order[r["path"]])


class RemoteFinding:
    """An API finding with the local finding's attributes, for print_findings."""

    def __init__(self, finding: Any) -> None:
        self.hit, self.answer, self.score = RemoteHit(finding), finding.answer, finding.answer_score

    def as_dict(self) -> dict:
        return {**self.hit.as_dict(), "answer": self.answer, "answer_score": round(self.score, 6)}


class RemoteAnswer:
    """POST /ask's answer with the local AskResult's attributes."""

    def __init__(self, answer: Any) -> None:
        self.question, self.retrieval_query, self.check = answer.question, answer.retrieval_query, answer.check
        self.method, self.model, self.candidates = answer.method, answer.model, answer.candidates
        self.verified = answer.verified
        self.findings = [RemoteFinding(f) for f in answer.results]


POLL_S = 1.0  # how often a server's index job is asked for its progress


def index_on_server(url: str, key: str | None, paths: list[Path], *, captions: bool, ocr: bool,
                    prune: bool) -> Any:
    """Start an index job on the server for its `paths` and follow it to its end with a progress bar per phase;
    the finished job. A failed job is a CLI error."""
    import time

    from vlsearch.api.cli.output import progress_bar

    folders = [str(p.absolute()) for p in paths]
    job = call_server(url, key, lambda client: client.index(folders, captions=captions, ocr=ocr, prune=prune))
    tasks: dict[str, Any] = {}
    with progress_bar() as bar:
        while True:
            if job.phase in ("embedding", "tagging", "describing"):
                task = tasks.get(job.phase)
                if task is None:
                    task = tasks[job.phase] = bar.add_task(job.phase, total=job.total or None)
                bar.update(task, completed=job.done, total=job.total or None)
            if job.state != "running":
                break
            time.sleep(POLL_S)
            job = call_server(url, key, lambda client, job_id=job.id: client.job(job_id))
    if job.state == "failed":
        raise fail(f"the server's index job {job.id} failed: {job.error}")
    return job
