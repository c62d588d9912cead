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

from captioner.base import ImageTextModel, NotSupported, check_pairs
from captioner.ocr import OcrReader, OcrUnavailable, ocr_reader
from encoders.base import limit_aspect
from encoders.offline import ImageNetClassifier

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.15  # a label must have at least this probability to be named
MAX_LABELS = 3
MAX_QUOTE = 200  # characters of OCR text quoted in a caption

_TEXT_QUESTION = re.compile(r"\b(text|written|writing|words?|say|says|read|reads|sign|label|letters?)\b", re.I)
# A yes/no question ("is there text", "does the sign have writing") as opposed to "what does it say".
_IS_THERE = re.compile(r"^\s*(is|are|does|do|has|have)\b", re.I)


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
            text = " ".join(self.ocr.read(image).split()) if self.ocr else ""
            if text:
                quoted = text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE].rsplit(" ", 1)[0] + " …"
                parts.append(f'text: "{quoted}"')
            caption = "; ".join(parts) or "nothing the offline model recognises"
            out.append(f"{prompt.strip()} {caption}" if prompt and prompt.strip() else caption)
        return out

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        check_pairs(images, questions, "questions")
        answers = []
        for image, question in zip(images, questions, strict=True):
            if not _TEXT_QUESTION.search(question):
                raise NotSupported(
                    f"the offline model can only answer questions about text in an image (OCR), not {question!r}: "
                    "this needs a VQA model: pass --vqa-model blip-vqa-base (its weights come from "
                    "`vlsearch models pull blip-vqa-base` on a connected machine)"
                )
            if self.ocr is None:
                raise NotSupported(f"answering {question!r} needs OCR, which is not installed")
            text = self.ocr.read(image)
            if _IS_THERE.search(question):
                answers.append(f'yes: "{text}"' if text else "no")
            else:
                answers.append(text or "no text found")
        return answers
