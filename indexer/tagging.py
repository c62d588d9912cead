"""Zero-shot tags from the library's stored vectors: each image's vector against a vocabulary's label vectors, a
matrix product per chunk of images and no image decoded again, so tagging a library costs what reading its
vectors does. A label's score is its share of the vocabulary, softmax(SCALE x cosine) as CLIP classifies zero-shot;
the labels scoring at least the vocabulary's threshold (at most MAX_TAGS) are the image's tags.

A model with a classifier of its own (the offline preset's ImageNet classes, stored at indexing as a CLASSES
companion, library/spaces.py) scores the default vocabulary with it instead: a label that is one of its classes
scores the classifier's calibrated probability, and the vocabulary's other labels, which it cannot see, none."""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy import exists, insert, select

from vlsearch.encoders import Encoder
from vlsearch.encoders.base import CLASSES
from vlsearch.indexer.report import ProgressHook, TagReport
from vlsearch.indexer.vocabulary import DEFAULT_NAME, vocabularies
from vlsearch.library import Library
from vlsearch.library.embeddings import decode_vectors, encode_vector
from vlsearch.library.schema import (
    Embedding,
    ImageRecord,
    ImageTag,
    ImageTagging,
    LabelVector,
    ModelRecord,
    VocabularyLabel,
)
from vlsearch.library.spaces import companion

SCALE = 100.0  # CLIP's trained logit scale (open_clip clamps it there): its zero-shot classifier's temperature
MAX_TAGS = 10
CHUNK = 4096  # images scored together: a 4,096 x labels matrix


class Tagger:
    """Tags the images of one model's vectors with every vocabulary of the library."""

    def __init__(self, library: Library, encoder: Encoder, progress: ProgressHook | None = None) -> None:
        library.require_model(encoder.name)
        self.library, self.encoder, self.progress = library, encoder, progress

    def run(self) -> TagReport:
        """Score the images not yet scored against each vocabulary (new ones, those whose vector changed, all of
        them after the vocabulary changed)."""
        started, report = time.perf_counter(), TagReport()
        for name, threshold in [(v.name, v.threshold) for v in vocabularies(self.library)]:
            report.vocabularies.append(name)
            labels, vectors = self.label_vectors(name)
            pending = self._pending(name)
            if self.progress:
                self.progress.start(len(pending))
            classes = self._classifier_columns(labels) if name == DEFAULT_NAME else None
            for start in range(0, len(pending), CHUNK):
                chunk = pending[start : start + CHUNK]
                report.tags += self._tag_chunk(name, threshold, labels, vectors, chunk, classes)
                report.scored += len(chunk)
                if self.progress:
                    self.progress.advance(len(chunk), 0)
        report.seconds = time.perf_counter() - started
        return report

    def label_vectors(self, vocabulary: str) -> tuple[list[str], np.ndarray]:
        """The vocabulary's labels and their text vectors under this model: stored ones read, missing ones
        computed (a vocabulary's first run) and stored."""
        model = self.encoder.name
        with self.library.session() as s:
            rows = s.execute(select(VocabularyLabel.label, VocabularyLabel.prompt)
                             .where(VocabularyLabel.vocabulary == vocabulary).order_by(VocabularyLabel.position)).all()
            stored = dict(s.execute(select(LabelVector.label, LabelVector.vector).where(
                LabelVector.vocabulary == vocabulary, LabelVector.model == model)).all())
        missing = [(label, prompt) for label, prompt in rows if label not in stored]
        if missing:
            computed = self.encoder.encode_texts([prompt for _, prompt in missing])
            new = {label: encode_vector(v) for (label, _), v in zip(missing, computed, strict=True)}
            with self.library.session() as s:
                s.execute(insert(LabelVector), [{"vocabulary": vocabulary, "label": label, "model": model,
                                                 "vector": blob} for label, blob in new.items()])
            stored |= new
        labels = [label for label, _ in rows]
        return labels, decode_vectors([stored[label] for label in labels], self.encoder.dim)

    def _pending(self, vocabulary: str) -> list[int]:
        model = self.encoder.name
        scored = exists().where(ImageTagging.vocabulary == vocabulary, ImageTagging.model == model,
                                ImageTagging.image_id == Embedding.image_id)
        with self.library.session() as s:
            return list(s.scalars(select(Embedding.image_id).join(ImageRecord, ImageRecord.id == Embedding.image_id)
                                  .where(Embedding.model == model, ImageRecord.status == "ok", ~scored)
                                  .order_by(Embedding.image_id)))

    def _classifier_columns(self, labels: list[str]) -> np.ndarray | None:
        """For each label, the column of the encoder's class it names (-1: none), when the encoder has a classifier
        whose probabilities the library holds; else None."""
        names, space = self.encoder.class_names, companion(self.encoder.name, CLASSES)
        if not names or CLASSES not in self.encoder.companions:
            return None
        with self.library.session() as s:
            if s.get(ModelRecord, space) is None:
                return None
        column = {name.lower(): i for i, name in enumerate(names)}
        return np.array([column.get(label.lower(), -1) for label in labels])

    def _tag_chunk(self, vocabulary: str, threshold: float, labels: list[str], label_vectors: np.ndarray,
                   image_ids: list[int], classes: np.ndarray | None) -> int:
        """Score a chunk of images and write their tags and that they were scored; how many tags. `classes`: the
        label -> class columns by which the classifier scores images whose probabilities are stored."""
        ids, vectors = self.library.load_vectors(self.encoder.name, image_ids)
        similarity, score, top = tag_scores(vectors, label_vectors, threshold)
        if classes is not None:
            score, top = self._classifier_scores(ids, score, top, classes, threshold)
        model = self.encoder.name
        rows = [{"image_id": int(ids[i]), "vocabulary": vocabulary, "label": labels[j], "model": model,
                 "score": float(score[i, j]), "similarity": float(similarity[i, j])} for i, j in top]
        with self.library.session() as s:
            if rows:
                s.execute(insert(ImageTag.__table__), rows)  # Core: the ORM's bulk insert took 3x as long
            s.execute(insert(ImageTagging.__table__), [{"vocabulary": vocabulary, "model": model, "image_id": int(i)}
                                             for i in ids])
        return len(rows)


    def _classifier_scores(self, ids: np.ndarray, zero_shot: np.ndarray, top: list[tuple[int, int]],
                           classes: np.ndarray, threshold: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The rows of images with stored class probabilities rescored by them; the others keep `zero_shot`."""
        found, roots = self.library.load_vectors(companion(self.encoder.name, CLASSES), ids.tolist())
        rows = np.searchsorted(ids, found)  # both in image id order
        score = zero_shot.copy()
        score[rows] = np.where(classes >= 0, np.square(roots)[:, np.maximum(classes, 0)], 0.0)
        mine = set(rows.tolist())
        top = [(i, j) for i, j in top if i not in mine] + top_labels(score[rows], threshold, rows)
        return score, sorted(top, key=lambda ij: (ij[0], -score[ij]))


def tag_scores(vectors: np.ndarray, label_vectors: np.ndarray, threshold: float
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(cosines, softmax scores, the (image row, label column) pairs that are tags): for each image, its labels
    scoring at least `threshold`, best first, at most MAX_TAGS."""
    similarity = vectors @ label_vectors.T
    logits = SCALE * similarity
    logits -= logits.max(axis=1, keepdims=True)
    score = np.exp(logits)
    score /= score.sum(axis=1, keepdims=True)
    return similarity, score, top_labels(score, threshold)


def top_labels(score: np.ndarray, threshold: float, row_ids: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The (row, label column) pairs scoring at least `threshold`, best first within a row, at most MAX_TAGS a
    row; rows are numbered by `row_ids` when given."""
    rows, cols = np.nonzero(score >= threshold)  # few: a threshold of 0.1 admits at most 10 labels a row
    order = np.lexsort((-score[rows, cols], rows))  # row by row, best first within a row
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place within its row
    keep = rank < MAX_TAGS
    rows = rows[keep] if row_ids is None else row_ids[rows[keep]]
    return list(zip(rows.tolist(), cols[keep].tolist(), strict=True))
