"""The quality report over HTTP: labelled cases in, recall@k, MRR and nDCG@10 per search mode, and tag and duplicate
pair scores out, as `vlsearch eval` reports them (search/quality.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends

from vlsearch.api.deps import get_service
from vlsearch.api.errors import ApiError, responses
from vlsearch.api.http_wording import say
from vlsearch.api.review_schemas import EvalRequest, EvalResponse
from vlsearch.api.routers.duplicates import CACHE
from vlsearch.api.security import require_read
from vlsearch.api.service import Service, in_thread
from vlsearch.images import DecodeError
from vlsearch.library import LibraryError
from vlsearch.search.eval_cases import EvalFileError, EvalSet, parse_cases
from vlsearch.search.evaluation import unindexed
from vlsearch.search.quality import QualityReport, quality_report
from vlsearch.search.query import MODES

router = APIRouter(tags=["quality"], dependencies=[Depends(require_read)])


@router.post("/eval", response_model=EvalResponse, response_model_by_alias=True,
             responses=responses(401, 403, 404, 409, 422),
             summary="Score search, tags and duplicates on labelled cases")
async def evaluate(request: EvalRequest, service: Service = Depends(get_service)) -> dict:
    """Every case searched in each mode and scored (recall@1/5/10, reciprocal rank, nDCG@10), the library's tags and
    duplicate groups scored against the tag and duplicate cases: the numbers `vlsearch eval` prints."""
    base = await in_thread(photos_folder, service, request.photos)
    try:
        cases = await in_thread(parse_cases, request.cases, "cases", base)
    except EvalFileError as exc:
        raise ApiError(422, f"cases[{exc.line - 1}]: {exc.problem}" if exc.line else f"cases: {exc.problem}") from None
    await in_thread(require_held_images, service, cases)
    try:
        report = await in_thread(run, service, cases, request.modes, request.k)
    except LibraryError as exc:
        raise ApiError(409, say(exc)) from None
    except (DecodeError, ValueError) as exc:
        raise ApiError(422, say(exc)) from None
    return report.as_dict()


def run(service: Service, cases: EvalSet, modes: list[str] | None, k: int) -> QualityReport:
    engine = service.engine()
    if engine is None:
        raise ApiError(409, "the library holds no vectors yet: index photos into it first")
    return quality_report(service.library, service.encoder.name, cases, lambda: engine, modes or MODES, k,
                          groups_of=lambda _library, _model: CACHE.get(service, None, None))


def photos_folder(service: Service, photos: str | None) -> Path | None:
    """The folder relative paths resolve against: `photos` when it is one of the library's folders (or inside
    one); by default the library's only folder; else none (paths must be absolute)."""
    roots = [root.resolve() for root in service.roots()]
    if photos is None:
        return roots[0] if len(roots) == 1 else None
    folder = Path(photos).resolve()
    if not any(folder == root or root in folder.parents for root in roots):
        raise ApiError(404, f"photos: {photos} is not one of the library's folders: use one of "
                       f"{', '.join(map(str, roots)) or '(none yet: index photos first)'}")
    return folder


def require_held_images(service: Service, cases: EvalSet) -> None:
    """Example images must be images the library holds: the server reads no other file for a caller."""
    queries = [str(case.image) for case in cases.search if case.image is not None]
    if missing := unindexed(service.library, queries):
        raise ApiError(404, f"an example image must be one the library holds; it has none at {missing[0]}")
