"""Companion vector spaces: vectors a model computes beside its search vector in the same forward pass (the offline
preset's visual descriptor, its classifier's probabilities; the roles are named in encoders/base.py), stored as
vectors of a model named `MODEL#ROLE`, so they share the search vectors' storage, FAISS indexes and bookkeeping, but
are never searched by text or listed as models."""

from __future__ import annotations

SEPARATOR = "#"


def companion(model: str, role: str) -> str:
    """The name `model`'s `role` vectors are stored under."""
    return f"{model}{SEPARATOR}{role}"


def is_companion(name: str) -> bool:
    return SEPARATOR in name
