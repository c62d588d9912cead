"""Companion vector spaces: vectors a model computes beside its search vector in the same forward pass (the offline
preset's visual descriptor, its classifier's probabilities), stored as vectors of a model named `MODEL#ROLE`, so they
share the search vectors' storage, FAISS indexes and bookkeeping, but are never searched by text or listed as
models."""

from __future__ import annotations

SEPARATOR = "#"
VISUAL = "visual"  # unit vectors of what an image looks like: what copies of one picture share (duplicates)
CLASSES = "classes"  # sqrt of a classifier's class probabilities: unit vectors, p = v**2 (tags)


def companion(model: str, role: str) -> str:
    """The name `model`'s `role` vectors are stored under."""
    return f"{model}{SEPARATOR}{role}"


def is_companion(name: str) -> bool:
    return SEPARATOR in name
