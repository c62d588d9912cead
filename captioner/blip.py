"""BLIP through transformers: captioning, visual question answering and image-text matching."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vlsearch.captioner.base import ImageTextModel, check_pairs
from vlsearch.encoders.precision import DTYPES, resolve_precision
from vlsearch.images import limit_aspect

log = logging.getLogger(__name__)

# transformers class name -> the task it does
TASK_OF_CLASS = {
    "BlipForConditionalGeneration": "caption",
    "BlipForQuestionAnswering": "answer",
    "BlipForImageTextRetrieval": "match",
}


@dataclass(frozen=True)
class GenerationSettings:
    """How captions and answers are decoded: greedy (num_beams=1, fastest) or beam search."""

    max_new_tokens: int = 30
    num_beams: int = 3
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.batch_size < 1:
            raise ValueError("max length, beams and batch size must each be at least 1")


class BlipModel(ImageTextModel):
    """One BLIP checkpoint (captioning, VQA or ITM head) with its processor; fp16 on a GPU, bf16 on a CPU that
    computes it in hardware (encoders/precision.py; BLIP-base captions 2.7-3.1x faster so: bench/results/captioning.md).
    """

    def __init__(self, name: str, model: torch.nn.Module, processor, device: str,
                 settings: GenerationSettings | None = None, precision: str = "auto") -> None:
        self.name = name
        self.device = device
        self.settings = settings or GenerationSettings()
        task = TASK_OF_CLASS.get(type(model).__name__)
        if task is None:
            raise ValueError(f"{type(model).__name__} is not a BLIP class vlsearch uses ({', '.join(TASK_OF_CLASS)})")
        self.tasks = frozenset({task})
        self.precision = resolve_precision(precision, device)
        self.dtype = DTYPES[self.precision]
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.processor = processor

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        if "caption" not in self.tasks:
            return super().caption(images, prompt)
        out: list[str] = []
        for batch in self._batches(list(images)):
            texts = [prompt] * len(batch) if prompt else None
            out.extend(self._generate(batch, texts))
        return out

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        if "answer" not in self.tasks:
            return super().answer(images, questions)
        check_pairs(images, questions, "questions")
        out: list[str] = []
        size = self.settings.batch_size
        for start in range(0, len(images), size):
            out.extend(self._generate(list(images[start : start + size]), list(questions[start : start + size])))
        return out

    @torch.inference_mode()
    def yes_probability(self, images: Sequence[Image.Image], questions: Sequence[str]) -> np.ndarray:
        """Softmax over the first answer token restricted to "yes" and "no": BLIP VQA answers yes/no
        questions with exactly one of those tokens, so this is its own confidence, not a heuristic."""
        if "answer" not in self.tasks:
            return super().yes_probability(images, questions)
        check_pairs(images, questions, "questions")
        tokenizer = self.processor.tokenizer
        yes, no = (tokenizer.convert_tokens_to_ids(t) for t in ("yes", "no"))
        out = []
        size = self.settings.batch_size
        for start in range(0, len(images), size):
            inputs = self._inputs(list(images[start : start + size]), list(questions[start : start + size]))
            generated = self.model.generate(**inputs, max_new_tokens=1, num_beams=1, do_sample=False,
                                            output_scores=True, return_dict_in_generate=True)
            first = generated.scores[0].float()
            out.append(torch.softmax(first[:, [yes, no]], dim=-1)[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

    @torch.inference_mode()
    def match(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        if "match" not in self.tasks:
            return super().match(images, texts)
        check_pairs(images, texts, "texts")
        out = []
        size = self.settings.batch_size
        for start in range(0, len(images), size):
            inputs = self._inputs(list(images[start : start + size]), list(texts[start : start + size]))
            logits = self.model(**inputs, use_itm_head=True).itm_score.float()
            out.append(torch.softmax(logits, dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

    def _batches(self, images: list[Image.Image]):
        size = self.settings.batch_size
        for start in range(0, len(images), size):
            yield images[start : start + size]

    def _inputs(self, images: list[Image.Image], texts: list[str] | None):
        rgb = [limit_aspect(im.convert("RGB")) for im in images]
        inputs = self.processor(images=rgb, text=texts, return_tensors="pt", padding=texts is not None,
                                truncation=texts is not None, max_length=128 if texts is not None else None)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    @torch.inference_mode()
    def _generate(self, images: list[Image.Image], texts: list[str] | None) -> list[str]:
        inputs = self._inputs(images, texts)
        settings = self.settings
        ids = self.model.generate(**inputs, max_new_tokens=settings.max_new_tokens, num_beams=settings.num_beams,
                                  do_sample=False)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]
