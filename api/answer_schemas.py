"""Bodies of the caption, question and ask endpoints (POST /caption, /caption/batch, /vqa, /ask)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vlsearch.api.schemas import Filters, Hit, Text, whole


class CaptionResult(BaseModel):
    caption: str = Field(examples=["a cat lying on a wooden floor"])
    model: str = Field(description="The model that wrote the caption. `offline` means no BLIP model was available: "
                       "the caption only names ImageNet objects and quotes OCR text.", examples=["blip-base"])
    image_id: int | None = Field(None, description="The indexed image captioned, if one was named.")
    stored: bool = Field(False, description="True when the caption is the one stored at indexing time.")


class BatchItem(BaseModel):
    index: int = Field(description="Position in the request: files first, then image_ids.")
    filename: str | None = None
    image_id: int | None = None
    caption: str | None = None
    model: str | None = None
    stored: bool = False
    error: str | None = Field(None, description="Why this item has no caption (the others are unaffected).")
    detail: str | None = None


class BatchCaptions(BaseModel):
    results: list[BatchItem]


class VqaAnswer(BaseModel):
    question: str = Field(examples=["what colour is the car?"])
    answer: str = Field(examples=["red"])
    model: str = Field(examples=["blip-vqa-base"])
    image_id: int | None = None


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"question": "which photos show a dog on a beach?", "k": 10},
    ]})

    question: Text = Field(min_length=1, max_length=500)
    k: whole(1, 100) = Field(10, description="At most this many images.")
    candidates: whole(1, 200) = Field(30, description="How many CLIP search results are checked.")
    threshold: float = Field(0.5, ge=0, le=1, allow_inf_nan=False,
                             description="Keep images whose yes (or match) probability is at least this (VQA and ITM; "
                             "OCR and retrieval answers have no probability to compare).")
    filters: Filters = Field(default_factory=Filters)


class Finding(Hit):
    answer: str = Field(examples=["yes"], description='VQA: "yes"; ITM: "matches"; OCR: yes and the text read; '
                        'retrieval: "found by similarity", "found by its words" or both.')
    answer_score: float = Field(description="P(yes) from VQA, the match probability from ITM, 1 for OCR, or the "
                                "fused rank score of retrieval (not a probability).")


class AskResponse(BaseModel):
    question: str
    retrieval_query: str = Field(description="What CLIP searched for.", examples=["a dog on a beach"])
    check: str = Field(description="The yes/no question asked of each candidate (or the text matched).")
    method: Literal["vqa", "itm", "ocr", "retrieval"] = Field(description="vqa or itm: each candidate checked by "
        "that model; ocr: from the text OCR read at indexing; retrieval: search alone (no VQA or ITM model here).")
    model: str
    candidates: int
    verified: bool = Field(True, description="False when the images were found by search and nothing checked them "
                           "against the question (retrieval): treat them as likely, not certain.")
    results: list[Finding]
