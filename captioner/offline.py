"""The `offline` fallback: a caption made only of what local models really see, for machines without BLIP.

It names the ImageNet objects EfficientNet-Lite0 is confident about and quotes the text OCR reads; it answers
only questions that OCR can ground (is there text, what does it say). Everything else is a NotSupported error
naming the model that can answer it, never a guess."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from vlsearch.captioner.base import ImageTextModel, NotSupported, check_pairs
from vlsearch.captioner.ocr import (
    OcrFailed,
    OcrReader,
    OcrUnavailable,
    holds_words,
    normalise_text,
    ocr_reader,
    quote_text,
)
from vlsearch.encoders.offline import ImageNetClassifier
from vlsearch.images import limit_aspect

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.15  # a label must have at least this probability to be named
MAX_LABELS = 3
MAX_QUOTE = 200  # characters of OCR text quoted in a caption

_TEXT = r"(text|writing|words?|letters?|numbers?|anything\s+written|something\s+written)"
# The three kinds of question OCR can ground; anything else needs a VQA model.
# "does the sign say STOP?", "does it read 'open'?": the quoted words are looked for in the OCR text.
_SAYS = re.compile(r"^\s*(does|do)\s+.+?\s+(say|read|spell)\s+(?P<words>.+?)\s*[?.!]*\s*$", re.I)
# "is there any text?", "are there words on the sign?", "does the image have writing?", "is anything written?"
_HAS_TEXT = re.compile(
    rf"^\s*((is|are)\s+there\s+(any\s+)?{_TEXT}"
    rf"|(does|do|has|have)\s+(it|this|that|the\s+\w+(\s+\w+)?)\s+(have|has|contain|show|got)?\s*(any\s+)?{_TEXT}"
    r"|is\s+(anything|something)\s+written"
    r"|(does|do)\s+.+?\s+say\s+(anything|something))\b",
    re.I,
)
# "what does the sign say?", "what is written on it?", "what text is in the image?", "read the label"
_WHAT_TEXT = re.compile(
    r"^\s*(what\s+(does|do|did)\s+.+?\s+(say|read|spell)\b|what('s|\s+is|\s+are|\s+was)?\s+(written|printed)\b"
    r"|what\s+(text|words?|letters?)\s+(is|are|does|do|can)\b|what('s|\s+is|\s+are)\s+the\s+(text|words?)\s*[?.!]*$"
    r"|read\b|transcribe\b)",
    re.I,
)
_FILLER = {"anything", "something", "any text", "anything at all"}
# Questions about what text means, or choices between readings, need understanding that OCR does not have.
_BEYOND_OCR = re.compile(r"\b(about|mean|means|meaning|or|language|colou?r|font|size)\b", re.I)


class OfflineCaptioner(ImageTextModel):
    """Captions from ImageNet labels and OCR text; answers questions about text from OCR alone."""

    name = "offline"
    tasks = frozenset({"caption", "answer"})

    def __init__(self, device: str, cache_dir: Path | None = None, ocr: OcrReader | None = None) -> None:
        self.device = device
        self.classifier = ImageNetClassifier(device)
        try:
            self.ocr: OcrReader | None = ocr or ocr_reader()
        except OcrUnavailable as exc:
            log.warning("offline captions will name objects only, not text: %s", exc)
            self.ocr = None

    def labels(self, images: Sequence[Image.Image]) -> list[list[tuple[str, float]]]:
        """Per image, the ImageNet labels above MIN_CONFIDENCE, most likely first."""
        if not images:
            return []
        batch = torch.stack([self.classifier.preprocess(limit_aspect(im.convert("RGB"))) for im in images])
        probs = self.classifier.probabilities(batch)
        top_p, top_i = probs.topk(MAX_LABELS, dim=-1)
        names = self.classifier.class_names
        return [
            [(names[int(i)], float(p)) for p, i in zip(ps, idx, strict=True) if p >= MIN_CONFIDENCE]
            for ps, idx in zip(top_p, top_i, strict=True)
        ]

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        out = []
        for labels, image in zip(self.labels(images), images, strict=True):
            parts = []
            if labels:
                parts.append(" or ".join(name for name, _ in labels))
            text = " ".join(self._read(image).split())
            if text:
                parts.append(f'text: "{quote_text(text, MAX_QUOTE)}"')
            caption = "; ".join(parts) or "nothing the offline model recognises"
            out.append(f"{prompt.strip()} {caption}" if prompt and prompt.strip() else caption)
        return out

    def _read(self, image: Image.Image) -> str:
        if self.ocr is None:
            return ""
        try:
            return self.ocr.read(image)
        except OcrFailed as exc:
            log.warning("caption without OCR text: %s", exc)
            return ""

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        check_pairs(images, questions, "questions")
        kinds = [self._kind(q) for q in questions]
        if self.ocr is None and questions:
            raise NotSupported(f"answering {questions[0]!r} needs OCR, which is not installed", "ocr")
        answers = []
        for image, question, (kind, words) in zip(images, questions, kinds, strict=True):
            try:
                text = self.ocr.read(image)
            except OcrFailed as exc:
                raise NotSupported(f"cannot answer {question!r}: {exc}", "answer") from None
            flat = " ".join(text.split())
            if kind == "says":
                if holds_words(flat, words):
                    answers.append(f'yes: "{flat}"')
                else:
                    answers.append(f'no: it reads "{flat}"' if flat else "no: no text found")
            elif kind == "has_text":
                answers.append(f'yes: "{flat}"' if flat else "no")
            else:
                answers.append(text or "no text found")
        return answers

    @staticmethod
    def _kind(question: str) -> tuple[str, str]:
        """Which question about text this is ("says" with the words asked about, "has_text" or "what"), or
        NotSupported when OCR cannot ground the answer."""
        if not _BEYOND_OCR.search(question):
            says = _SAYS.match(question)
            if says and normalise_text(says["words"]) not in _FILLER:
                if normalise_text(says["words"]):
                    return "says", says["words"]
            elif _HAS_TEXT.match(question):
                return "has_text", ""
            elif _WHAT_TEXT.match(question):
                return "what", ""
        raise NotSupported(
            f"the offline model can only answer questions about the text in an image (OCR: \"is there text?\", "
            f"\"what does the sign say?\", \"does it say OPEN?\"), not {question!r}: this needs a VQA model", "answer")
