"""Tag vocabularies: the labels images are tagged with, read from a file (one label per line, or a CSV with a
`label` column and an optional `prompt` column) and kept in the library. Replacing a vocabulary drops its tags,
so the next tagging run scores every image against the new labels."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, insert, select

from vlsearch.library import Library
from vlsearch.library.schema import ImageTag, ImageTagging, Vocabulary, VocabularyLabel, utcnow

DEFAULT_NAME = "default"
DEFAULT_FILE = Path(__file__).parent / "vocabularies" / "default.txt"
DEFAULT_THRESHOLD = 0.1
PROMPT = "a photo of {}."  # CLIP's zero-shot template; a file's `prompt` column overrides it per label
MAX_LABELS = 50_000
MAX_LABEL_CHARS = 200
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class VocabularyError(ValueError):
    """A vocabulary file or name that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Label:
    label: str
    prompt: str


def read_vocabulary(path: Path) -> list[Label]:
    """The labels of a .txt (one per line, `#` comments) or .csv (`label`, optional `prompt`) file, repeats (in
    any case) dropped."""
    try:
        rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _text_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VocabularyError(f"cannot read the vocabulary {path}: {exc}") from None
    labels: dict[str, Label] = {}
    for line, label, prompt in rows:
        if len(label) > MAX_LABEL_CHARS:
            raise VocabularyError(f"{path}, line {line}: a label of more than {MAX_LABEL_CHARS} characters")
        if prompt and "{}" not in prompt and label.lower() not in prompt.lower():
            raise VocabularyError(f"{path}, line {line}: the prompt {prompt!r} should contain {{}} or the label")
        labels.setdefault(label.lower(), Label(label, (prompt or PROMPT).replace("{}", label)))
    if not labels:
        raise VocabularyError(f"{path} has no labels: write one label per line")
    if len(labels) > MAX_LABELS:
        raise VocabularyError(f"{path} has {len(labels):,} labels; at most {MAX_LABELS:,} are supported")
    return list(labels.values())


def _text_rows(path: Path) -> list[tuple[int, str, str | None]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            text = text.split("#", 1)[0].strip()
            if text:
                rows.append((line, text, None))
    return rows


def _csv_rows(path: Path) -> list[tuple[int, str, str | None]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [name.strip().lower() for name in reader.fieldnames or []]
        if "label" not in fields:
            raise VocabularyError(f"{path}: a CSV vocabulary needs a `label` column (and may have `prompt`)")
        rows = []
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if row.get("label"):
                rows.append((reader.line_num, row["label"], row.get("prompt") or None))
        return rows


def save_vocabulary(library: Library, name: str, labels: list[Label], threshold: float, source: str) -> None:
    """The vocabulary `name` becomes these labels and threshold; its old tags go (the cascade), to be scored anew."""
    if not _NAME.match(name):
        raise VocabularyError(f"{name!r} is not a vocabulary name: letters, digits, _ . - (at most 64)")
    if not 0 < threshold <= 1:
        raise VocabularyError(f"the threshold is a score above 0 and at most 1 (a label's share of the vocabulary), "
                              f"not {threshold}")
    with library.session() as s:
        s.execute(delete(Vocabulary).where(Vocabulary.name == name))
        s.add(Vocabulary(name=name, threshold=threshold, source=source, updated_at=utcnow()))
        s.flush()
        s.execute(insert(VocabularyLabel), [{"vocabulary": name, "label": lb.label, "prompt": lb.prompt,
                                             "position": i} for i, lb in enumerate(labels)])


def ensure_default(library: Library) -> bool:
    """Give a library that has no vocabulary the default one; whether it was added."""
    with library.session() as s:
        if s.scalar(select(Vocabulary.name).limit(1)) is not None:
            return False
    save_vocabulary(library, DEFAULT_NAME, read_vocabulary(DEFAULT_FILE), DEFAULT_THRESHOLD, DEFAULT_NAME)
    return True


def vocabularies(library: Library) -> list[Vocabulary]:
    with library.session() as s:
        found = list(s.scalars(select(Vocabulary).order_by(Vocabulary.name)))
        s.expunge_all()
        return found


def remove_vocabulary(library: Library, name: str) -> None:
    with library.session() as s:
        if not s.execute(delete(Vocabulary).where(Vocabulary.name == name)).rowcount:
            raise LookupError(f"the library has no vocabulary {name!r}")


def vocabulary_counts(library: Library) -> list[dict]:
    """Each vocabulary with its label count, threshold, source, images scored against it and tags given."""
    def per_vocabulary(s, column):
        return dict(s.execute(select(column, func.count()).group_by(column)).all())

    with library.session() as s:
        labels = per_vocabulary(s, VocabularyLabel.vocabulary)
        scored = per_vocabulary(s, ImageTagging.vocabulary)
        tags = per_vocabulary(s, ImageTag.vocabulary)
        return [{"name": v.name, "labels": labels.get(v.name, 0), "threshold": v.threshold, "source": v.source,
                 "scored": scored.get(v.name, 0), "tags": tags.get(v.name, 0)}
                for v in s.scalars(select(Vocabulary).order_by(Vocabulary.name))]
