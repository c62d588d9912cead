"""The cases an eval file (or the API's body) holds, read and checked: search cases, tag cases and duplicate groups,
their paths resolved as the library stores them. The file's format is in search/evaluation.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# A case's kind is told by the key only it has; these are all the keys it may have.
CASE_KEYS = {"relevant": {"text", "image", "relevant"}, "tags": {"path", "tags"}, "duplicates": {"duplicates"}}


class EvalFileError(ValueError):
    """An eval file that cannot be read as cases: `line` (from 1) is the line at fault, None for the whole file."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = path, line, problem
        super().__init__(f"{path}, line {line}: {problem}" if line else f"{path}: {problem}")


Bad = Callable[[str], EvalFileError]  # words a problem as the error about the line being read


@dataclass(frozen=True)
class SearchCase:
    """Words or an example image, and the photos (resolved paths) a search for it should find."""

    line: int
    relevant: frozenset[str]
    text: str | None = None
    image: Path | None = None

    @property
    def label(self) -> str:
        return self.text if self.text is not None else str(self.image)


@dataclass(frozen=True)
class TagCase:
    line: int
    path: str
    tags: frozenset[str]


@dataclass(frozen=True)
class DuplicateCase:
    line: int
    groups: tuple[frozenset[str], ...]


@dataclass(frozen=True)
class EvalSet:
    """An eval file's cases by kind, in file order."""

    search: tuple[SearchCase, ...] = ()
    tags: tuple[TagCase, ...] = ()
    duplicates: tuple[DuplicateCase, ...] = ()

    def tag_truth(self) -> dict[str, set[str]]:
        """path -> the tags it should get, as tag_scores takes the truth."""
        return {case.path: set(case.tags) for case in self.tags}

    def duplicate_truth(self) -> list[set[str]]:
        """Every group of duplicates, as duplicate_pair_scores takes the truth."""
        return [set(group) for case in self.duplicates for group in case.groups]


def read_eval_file(path: Path, photos: Path | None = None) -> EvalSet:
    """The cases of an eval file, their paths resolved against `photos` (default: the file's folder). Raises
    EvalFileError naming the line at fault: bad JSON, a missing or unknown key, a wrong type, a photo labelled on
    two lines, or a file with no cases."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalFileError(path, None, f"cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    base = photos if photos is not None else path.parent
    cases = [_case(_json(path, number, line), path, number, base)
             for number, line in enumerate(lines, 1) if line.strip()]
    if not cases:
        raise EvalFileError(path, None, "holds no cases (one JSON object a line)")
    return _eval_set(path, cases)


def parse_cases(cases: Sequence[object], where: str, photos: Path | None) -> EvalSet:
    """Cases given as decoded JSON values (the API's body), numbered from 1 like lines; relative paths joined to
    `photos` (None: only absolute paths) and normalised as text, no link followed: a caller learns nothing of where
    the server's links lead. Raises EvalFileError as read_eval_file does."""
    if not cases:
        raise EvalFileError(where, None, "holds no cases")
    cases = [_case(case, where, number, photos, follow_links=False) for number, case in enumerate(cases, 1)]
    return _eval_set(where, cases)


def _eval_set(where: Path | str, cases: list[SearchCase | TagCase | DuplicateCase]) -> EvalSet:
    found = EvalSet(*(tuple(c for c in cases if isinstance(c, kind)) for kind in (SearchCase, TagCase, DuplicateCase)))
    _require_labelled_once(where, [(c.line, [c.path]) for c in found.tags], "tags")
    _require_labelled_once(where, [(c.line, [p for g in c.groups for p in g]) for c in found.duplicates], "a group")
    return found


def _json(where: Path, number: int, line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalFileError(where, number, f"not JSON: {exc.msg} (column {exc.colno})") from None


def _case(case: object, where: Path | str, number: int, base: Path | None,
          follow_links: bool = True) -> SearchCase | TagCase | DuplicateCase:
    """One line's case. Raises EvalFileError."""

    def bad(problem: str) -> EvalFileError:
        return EvalFileError(where, number, problem)

    if not isinstance(case, dict):
        raise bad(f"a case is a JSON object, not {type(case).__name__}")
    kinds = [key for key in CASE_KEYS if key in case]
    if len(kinds) != 1:
        raise bad('a case has exactly one of "relevant" (a search case), "tags" or "duplicates"')
    if unknown := sorted(set(case) - CASE_KEYS[kinds[0]]):
        raise bad(f"unknown key {_quoted(unknown)}: this kind of case has {_quoted(sorted(CASE_KEYS[kinds[0]]))}")
    if kinds[0] == "tags":
        tags = _strings(case["tags"], '"tags"', bad, allow_empty=True)
        path = _resolve(_string(case.get("path"), '"path"', bad), base, bad, follow_links)
        return TagCase(number, path, frozenset(tags))
    if kinds[0] == "duplicates":
        return DuplicateCase(number, _groups(case["duplicates"], base, bad, follow_links))
    relevant = frozenset(_resolve(p, base, bad, follow_links) for p in _strings(case["relevant"], '"relevant"', bad))
    if ("text" in case) == ("image" in case):
        raise bad('a search case has "text" or "image" (one of them)')
    if "text" in case:
        return SearchCase(number, relevant, text=_string(case["text"], '"text"', bad))
    image = _resolve(_string(case["image"], '"image"', bad), base, bad, follow_links)
    return SearchCase(number, relevant, image=Path(image))


def _quoted(keys: list[str]) -> str:
    return ", ".join(json.dumps(key) for key in keys)


def _string(value: object, what: str, bad: Bad) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad(f"{what} must be a non-empty string, not {json.dumps(value)}")
    return value


def _strings(value: object, what: str, bad: Bad, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not (value or allow_empty):
        raise bad(f"{what} must be a {'' if allow_empty else 'non-empty '}list of strings, not {json.dumps(value)}")
    return [_string(item, f"each of {what}", bad) for item in value]


def _groups(value: object, base: Path | None, bad: Bad, follow_links: bool) -> tuple[frozenset[str], ...]:
    if not isinstance(value, list) or not value:
        raise bad(f'"duplicates" must be a non-empty list of groups (lists of paths), not {json.dumps(value)}')
    groups = tuple(frozenset(_resolve(p, base, bad, follow_links) for p in _strings(g, "a group", bad)) for g in value)
    if any(len(group) < 2 for group in groups):
        raise bad("a group of duplicates names at least two different files")
    return groups


def _resolve(value: str, base: Path | None, bad: Bad, follow_links: bool = True) -> str:
    """The path as the library stores it: absolute, symlinks resolved (a relative one from `base`); without
    `follow_links`, normalised as text only."""
    if base is None and not Path(value).is_absolute():
        raise bad(f"{value!r} is relative, and no folder was given for it to be relative to")
    base = base or Path("/")
    try:
        return str((base / value).resolve()) if follow_links else os.path.normpath(base / value)
    except (OSError, RuntimeError, ValueError) as exc:  # a NUL character, a symlink loop
        raise bad(f"{value!r} is not a usable path: {exc}") from None


def _require_labelled_once(where: Path | str, labels: list[tuple[int, list[str]]], what: str) -> None:
    """Each path in at most one of `what`: two labels for one photo would contradict (or double count) each other."""
    first: dict[str, int] = {}
    for number, paths in labels:
        for path in paths:
            if path in first:
                raise EvalFileError(where, number, f"{path} is already in {what} on line {first[path]}")
            first[path] = number
