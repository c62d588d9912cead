"""The one interface every image-to-text model offers: captions, answers to questions, image-text matching."""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence

import numpy as np
from PIL import Image

from vlsearch.captioner.errors import NotSupported

TASKS = ("caption", "answer", "match")


class ImageTextModel(ABC):
    """Images in, text (or image-text scores) out. A model implements the tasks it is built for; the others
    raise NotSupported with a message that says which model to load, never a guess."""

    name: str
    device: str = "cpu"
    tasks: frozenset[str] = frozenset()

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        """One caption per image; `prompt` (e.g. "a photo of") starts every caption."""
        raise NotSupported(f"{self.name} does not write captions", "caption")

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        """The answer to questions[i] about images[i]."""
        raise NotSupported(f"answering questions needs a VQA model, and {self.name} is not one", "answer")

    def yes_probability(self, images: Sequence[Image.Image], questions: Sequence[str]) -> np.ndarray:
        """P(answer is "yes") for yes/no questions[i] about images[i]: a score to rank and threshold by."""
        raise NotSupported(f"yes/no checks need a VQA model, and {self.name} is not one", "answer")

    def match(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """P(texts[i] describes images[i]), in [0, 1]."""
        raise NotSupported(f"image-text matching needs an ITM model, and {self.name} is not one", "match")


class ModelSuite(ImageTextModel):
    """One model per task, behind the single interface: what the CLI and the server hold."""

    def __init__(self, captioner: ImageTextModel | None = None, answerer: ImageTextModel | None = None,
                 matcher: ImageTextModel | None = None) -> None:
        self.captioner, self.answerer, self.matcher = captioner, answerer, matcher
        loaded = [m for m in (captioner, answerer, matcher) if m is not None]
        self.name = "+".join(dict.fromkeys(m.name for m in loaded)) or "none"
        self.device = loaded[0].device if loaded else "cpu"
        self.tasks = frozenset(
            task for task, model in (("caption", captioner), ("answer", answerer), ("match", matcher))
            if model is not None and task in model.tasks
        )

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        return (self.captioner or super()).caption(images, prompt)

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        return (self.answerer or super()).answer(images, questions)

    def yes_probability(self, images: Sequence[Image.Image], questions: Sequence[str]) -> np.ndarray:
        return (self.answerer or super()).yes_probability(images, questions)

    def match(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        return (self.matcher or super()).match(images, texts)


def check_pairs(images: Sequence[Image.Image], texts: Sequence[str], what: str) -> None:
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} {what}: give one per image")
