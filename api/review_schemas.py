"""The API's request and response bodies for reviewing a library: duplicate groups and the quality report. Pure
pydantic, like schemas.py, so the Python client (vlsearch.client) imports them without the server."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from vlsearch.api.combinations import EVAL_CASE
from vlsearch.api.schemas import Mode, Text, whole

Kind = Literal["exact", "copy", "near"]
MAX_CASES = 1000


class DuplicateMemberOut(BaseModel):
    id: int
    path: str
    similarity: float = Field(description="Cosine similarity to the group's keeper (1 for the keeper, and for files "
                              "with the same bytes).")
    width: int | None
    height: int | None
    size: int
    format: str | None
    thumbnail_url: str


class DuplicateGroupOut(BaseModel):
    kind: Kind = Field(description="exact: the same bytes; copy: the same picture resized, recompressed, cropped or "
                       "bordered; near: near-identical shots.")
    keeper: int = Field(description="The image suggested to keep: the most pixels, then the earliest taken, then "
                        "the more original format.")
    members: list[DuplicateMemberOut] = Field(description="The keeper first, then the others, most similar first.")


class DuplicatesOut(BaseModel):
    total: int = Field(description="Groups found with these settings (of all kinds asked for).")
    groups: list[DuplicateGroupOut]


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    cases: list[Annotated[dict[str, Any], WithJsonSchema(EVAL_CASE)]] = Field(
        min_length=1, max_length=MAX_CASES, description='One object a case, as a line of an eval file: {"text": "a '
        'cat", "relevant": ["cats/tom.jpg"]}, {"image": PATH, "relevant": [...]} (an image the library holds), '
        '{"path": PATH, "tags": [...]}, or {"duplicates": [[PATH, PATH], ...]}.')
    photos: Text | None = Field(None, max_length=4096, description="The folder relative paths are relative to: "
                                "one of the library's folders. Default: its only folder, when it has one.")
    modes: list[Mode] | None = Field(None, min_length=1, max_length=3, description="Search modes to score "
                                     "(default: all three); keyword mode scores text cases only.")
    k: whole(1, 100) = Field(10, description="How deep reciprocal rank looks (MRR@k).")


class ScoresOut(BaseModel):
    recall_at_1: float = Field(alias="recall@1")
    recall_at_5: float = Field(alias="recall@5")
    recall_at_10: float = Field(alias="recall@10")
    reciprocal_rank: float
    ndcg_at_10: float = Field(alias="ndcg@10")


class CaseOut(ScoresOut):
    line: int = Field(description="The case's place in `cases`, from 1.")
    query: str


class ModeOut(BaseModel):
    mode: Mode
    scored: int
    skipped: int = Field(description="Cases the mode does not apply to (image cases, in keyword mode).")
    mean: ScoresOut | None = Field(description="Means over the scored cases (MRR for reciprocal_rank).")
    cases: list[CaseOut]


class PairsOut(BaseModel):
    precision: float
    recall: float
    predicted: int
    expected: int
    correct: int


class EvalResponse(BaseModel):
    k: int | None = None
    unindexed: list[str] = Field([], description="Relevant paths the library holds no image at: misses for a "
                                 "reason that is not the model's (a typo, or photos not indexed).")
    modes: list[ModeOut] = []
    tags: PairsOut | None = Field(None, description="(image, tag) pairs: the library's tags against the cases'.")
    duplicates: PairsOut | None = Field(None, description="Pairs of photos the duplicate groups put together.")
