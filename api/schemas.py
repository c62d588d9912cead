"""Request and response bodies of the HTTP API, with the examples /docs shows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from vlsearch.api import combinations

MAX_K = 1000  # results per page
MAX_WINDOW = 10_000  # offset + k: deeper pages than this are refused (re-query with filters instead)
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id is a 422, not an overflow
Mode = Literal["vector", "keyword", "hybrid"]


def _utc(value: datetime) -> datetime:
    """The library stores UTC without a zone; the API says so, as RFC 3339 requires (`...Z`-style offset)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A moment this program recorded (indexing, captioning, jobs): always UTC, with its offset.
UtcTime = Annotated[datetime, AfterValidator(_utc)]
# When the camera says the photo was taken: EXIF keeps the camera's wall clock and no zone, so this is local
# time as ISO 8601 without an offset. Not an RFC 3339 date-time, and the schema says so rather than invent a zone.
CameraTime = Annotated[
    datetime,
    PlainSerializer(lambda value: value.replace(tzinfo=None).isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "examples": ["2024-05-01T14:03:22"],
                    "description": "The camera's local wall-clock time (EXIF), ISO 8601 without a time zone."}),
]
# A date to filter by: a day, or a day and a time, with or without an offset (cameras keep local time, so a time
# without one is the natural query). Numbers are refused: lax parsing read "0.0" as 1970.
# Digits spelled [0-9]: Python's \d also takes other scripts' digits, ECMA's (the schema's) does not.
_DAY = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
WHEN = rf"^{_DAY}([Tt ]{_TIME}([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"


def _when(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(WHEN, value):
        raise ValueError("give a date, 2024-05-01, or a date and time, 2024-05-01T14:03:22 (Z or an offset such as "
                         "+02:00 may follow)")
    if not isinstance(value, (str, datetime)):
        raise ValueError("give a date as text, e.g. 2024-05-01")
    return value


# The pattern, not format date/date-time: RFC 3339 wants an offset (a camera's local time has none) and admits
# leap seconds, which Python's datetime does not.
When = Annotated[datetime, BeforeValidator(_when), WithJsonSchema({
    "type": "string", "pattern": WHEN, "examples": ["2024-05-01", "2024-05-01T14:03:22"],
    "description": "A day, or a day and a time, with or without an offset (Z, +02:00)."})]
Sort = Literal["score", "date"]
Group = Literal["product"]


def no_surrogates(text: str) -> str:
    """A lone UTF-16 surrogate is valid JSON but no text: SQLite and the tokenizer cannot take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an invalid character (a lone surrogate); send UTF-8 text") from None
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    return text


def _whole(value: object) -> object:
    """JSON Schema counts 3.0 as an integer, so the API takes it as 3; `true` and "3" stay refused (strict)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(low: int, high: int) -> type[int]:
    """An integer in a JSON body, from `low` to `high`. The bounds sit before the validator: after it, pydantic
    writes them into the schema as `ge`/`le`, which JSON Schema does not know."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole)]


JsonImageId = whole(1, MAX_ID)  # in a JSON body (deps.ImageId: in a URL path)
Text = Annotated[str, Field(json_schema_extra=combinations.NO_NUL), AfterValidator(no_surrogates)]
# An absolute path. The pattern sits before the validator: after it, or on a Query of `Text | None`, pydantic leaves
# it out of the schema, which then admitted relative paths the server refused.
FolderPath = Annotated[str, Field(pattern=combinations.ABSOLUTE, max_length=4096,
                                  json_schema_extra=combinations.NO_NUL), AfterValidator(no_surrogates)]
Weight = Annotated[float, Field(ge=-10, le=10, allow_inf_nan=False)]
Condition = Annotated[Text, Field(min_length=3, max_length=1000, examples=["category=shoes", "price<100"],
                                  json_schema_extra={"pattern": combinations.CONDITION})]
Facet = Annotated[Text, Field(min_length=1, max_length=200, examples=["brand", "category", "colour"])]
FACET_HELP = ("Count the values of these product fields or attributes (brand, category, currency, or an attribute) "
              "among the best 200 hits' products, returned in `facets`; `tags` counts the best 200 hits' tags.")
BOX_HELP = ("Search with this region of the image only (left, top, right, bottom as fractions of its width and "
            "height): the shoes in a photo of a whole outfit.")
WHERE_HELP = ("Only images of products meeting each condition: name=value, name!=value, name<number, name<=number, "
              "name>number, name>=number; name=a|b for any of several values. Names: title, brand, category, "
              "price, currency, or a catalogue attribute.")


# Text with a word in it; the pattern sits before the validator, where pydantic keeps it in the schema.
Words = Annotated[str, Field(pattern=combinations.WORDS["pattern"], json_schema_extra=combinations.NO_NUL),
                  AfterValidator(no_surrogates)]
TagText = Annotated[Words, Field(min_length=1, max_length=200)]
TAG_HELP = "Only images tagged this (all of them; any case). Tags come from `vlsearch tags`."


class TagOut(BaseModel):
    label: str
    score: float = Field(description="The label's share of its vocabulary for this image (softmax over its labels); "
                         "for the offline preset's default vocabulary, its ImageNet classifier's probability.")
    similarity: float = Field(description="The cosine of the image's and the label's vectors.")
    vocabulary: str


class Filters(BaseModel):
    # Strict, as every JSON body: a number is a JSON number (lax parsing took `true` or "1" for 1), and the schema
    # says so. Dates stay lax: JSON has no date type, so they come as strings.
    model_config = ConfigDict(extra="forbid", strict=True)

    path: FolderPath | None = Field(None, description="Only files under this folder "
                              "(absolute path).",
                              examples=["/photos/2024"])
    after: When | None = Field(None, strict=False, description="Taken on or after this date/time.",
                                   examples=["2024-05-01"])
    before: When | None = Field(None, strict=False, description="Taken before this date/time.",
                                    examples=["2024-06-01"])
    camera: Text | None = Field(None, max_length=200, description="Camera make or model contains this.",
                                examples=["pixel"])
    min_score: float | None = Field(None, ge=-1, le=1, allow_inf_nan=False,
                                    description="Drop hits whose CLIP similarity is below this.")
    where: list[Condition] = Field(default_factory=list, max_length=20, description=WHERE_HELP)
    tags: list[TagText] = Field(default_factory=list, max_length=20, description=TAG_HELP)


class SearchRequest(BaseModel):
    """Text, an image (an indexed one by id, or any image as base64), or both; weighted, minus the negatives."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={**combinations.SEARCH, "examples": [
        {"text": "red summer dress", "image_id": 42, "image_weight": 2.0, "negatives": ["long sleeves"], "k": 20},
    ]})

    text: Text | None = Field(None, max_length=1000, description="What to look for, in words.")
    image_id: JsonImageId | None = Field(None,
                                 description="Look for images like this indexed image (left out of the hits).")
    image: str | None = Field(None, description="Look for images like this one: the image file, base64-encoded "
                              "(standard alphabet; a data: URL prefix is accepted).", max_length=40_000_000)
    negatives: list[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=20, description="Push results away from these.")
    text_weight: Weight = 1.0
    image_weight: Weight = 1.0
    negative_weight: Weight = 0.5
    filters: Filters = Field(default_factory=Filters)
    k: whole(1, MAX_K) = Field(20, description="Hits per page.")
    offset: whole(0, MAX_WINDOW) = Field(0, description="Skip this many hits (the next page: `next_offset`).")
    mode: Mode = Field("vector", description="vector: CLIP similarity; keyword: words in file names, captions and "
                       'OCR text ("quoted phrases" match exactly); hybrid: both, fused by reciprocal rank.')
    sort: Sort = Field("score", description="score, or date: the best 1000 matches, newest first (pages walk "
                       "through them).")
    rerank: whole(0, 200) = Field(0, description="Rescore this many top hits with the image-text matching "
                        "model (needs one loaded).")
    group: Group | None = Field(None, description="product: the hits are products, each by its best-matching "
                                "image, with `product` set; k and offset count products.")
    product_id: Text | None = Field(None, min_length=1, max_length=256, description="Look for products like this "
                                    "one (all its images count; it is left out). Needs group=product.")
    facets: list[Facet] = Field(default_factory=list, max_length=20, description=FACET_HELP)
    box: list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] | None = Field(
        None, min_length=4, max_length=4, description=BOX_HELP, examples=[[0.5, 0.6, 1.0, 1.0]])


class ProductOut(BaseModel):
    id: str = Field(examples=["SKU-1042"])
    title: str | None = Field(None, examples=["ACME trail shoe"])
    description: str | None = None
    brand: str | None = Field(None, examples=["ACME"])
    category: str | None = Field(None, examples=["shoes"])
    price: float | None = Field(None, examples=[89.9])
    currency: str | None = Field(None, examples=["EUR"])
    url: str | None = None
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict, examples=[{"color": "red"}])
    images: int = Field(description="Its indexed images.", examples=[4])


class Hit(BaseModel):
    id: int = Field(examples=[42])
    path: str = Field(examples=["/photos/2024/beach.jpg"])
    score: float = Field(description="Higher is better: cosine similarity (vector), bm25 (keyword) or fused "
                         "reciprocal rank (hybrid).", examples=[0.31])
    width: int | None = Field(description="As displayed (EXIF orientation applied).", examples=[4032])
    height: int | None = Field(examples=[3024])
    taken_at: CameraTime | None = None
    camera: str | None = None
    caption: str | None = Field(None, description="What the caption model says the image shows; use as alt text.",
                                examples=["a dog running on a beach"])
    ocr_text: str | None = Field(None, description="Text read in the image by OCR.")
    match_score: float | None = Field(None, description="P(query describes image) from the rerank model.")
    thumbnail_url: str | None = Field(examples=["/api/v1/images/42/thumbnail"])
    file_url: str = Field(examples=["/api/v1/images/42/file"])
    product: ProductOut | None = Field(None, description="Grouped by product: the product this image stands for.")


class SearchResponse(BaseModel):
    model: str = Field(description="The embedding model of the library.", examples=["ViT-B-32/laion2b_s34b_b79k"])
    mode: Mode
    k: int
    offset: int
    hits: list[Hit]
    next_offset: int | None = Field(description="Offset of the next page; null when there is none.")
    took_ms: float
    reranked: bool | None = Field(None, description="Whether the hits were reranked: null when no rerank was asked "
                                  "for; false when it could not be done (`rerank_note` says why).")
    rerank_note: str | None = Field(None, description="Why a rerank asked for was not done.")
    facets: dict[str, dict[str, int]] | None = Field(None, description="For each facet asked for: value -> how "
                                                     "many of the best 200 hits' products have it, most first.",
                                                     examples=[{"brand": {"ACME": 12, "Zeta": 3}}])


class CaptionOut(BaseModel):
    model: str
    text: str
    created_at: UtcTime


class ImageDetail(BaseModel):
    id: int
    path: str
    status: Literal["ok", "error"] = Field(description="error: the file could not be read; `error` says why.")
    error: str | None
    size_bytes: int
    sha256: str | None
    width: int | None = Field(description="As displayed (EXIF orientation applied).")
    height: int | None
    format: str | None = Field(examples=["JPEG"])
    orientation: int | None = Field(description="EXIF orientation tag (1-8).")
    taken_at: CameraTime | None
    camera_make: str | None
    camera_model: str | None
    indexed_at: UtcTime
    caption: str | None = Field(description="The best caption (a real caption model's before the offline one).")
    captions: list[CaptionOut]
    ocr_text: str | None
    models: list[str] = Field(description="Embedding models that have a vector for this image.")
    tags: list[TagOut] = Field(description="Its tags, best first (`vlsearch tags`).")
    thumbnail_url: str | None
    file_url: str | None


class Deleted(BaseModel):
    id: int
    path: str


MAX_DELETE = 1000


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"ids": [42, 43, 97]}]})

    ids: list[JsonImageId] = Field(
        min_length=1, max_length=MAX_DELETE, description=f"Image ids to forget, at most {MAX_DELETE} per request.")


class DeletedMany(BaseModel):
    deleted: list[Deleted] = Field(description="The images forgotten, in the order asked.")
    missing: list[int] = Field(description="Ids that were not in the library (already deleted, or never there).")


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"paths": ["/srv/photos/2024"]}]})

    paths: list[FolderPath] = Field(
        min_length=1, max_length=100, description="Folders or files on the server, each under a root the operator "
        "allowed (index_roots).")
    captions: bool = Field(True, description="Caption new images (when the server has a caption model).")
    ocr: bool = Field(True, description="Read text in new images (when the server has OCR).")
    prune: bool = Field(True, description="Forget files that vanished from these folders.")


class JobOut(BaseModel):
    id: int
    state: Literal["running", "succeeded", "failed"]
    phase: Literal["embedding", "tagging", "describing", "done"]
    paths: list[str]
    done: int = Field(description="Items done in this phase.")
    total: int = Field(description="Items in this phase.")
    errors: int = Field(description="Files that could not be indexed or described so far.")
    images_per_second: float
    started_at: UtcTime
    finished_at: UtcTime | None
    error: str | None = Field(description="Why the job failed.")
    summary: dict[str, int] = Field(description="What the job did, once each phase ends.")
    failures: list[list[str]] = Field(description="[path, reason] of files that failed (first 100).")
    url: str


class ModelCount(BaseModel):
    name: str
    dim: int
    vectors: int


class ServerModels(BaseModel):
    embedding: str
    caption: str | None
    vqa: str | None
    itm: str | None
    ocr: bool


class Stats(BaseModel):
    library: str
    images: int
    errors: int
    models: list[ModelCount]
    captions: dict[str, int] = Field(description="Caption model -> images it captioned.")
    ocr: int = Field(description="Images OCR has read.")
    disk_bytes: int
    schema_revision: str | None
    loaded: ServerModels
    job: JobOut | None = Field(description="The index job running now, if any.")


class Health(BaseModel):
    status: Literal["ok"]
    model: str
