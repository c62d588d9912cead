"""Companion vector spaces: vectors a model computes beside its search vector in the same forward pass (the offline
preset's visual descriptor, its classifier's probabilities; the roles are named in encoders/base.py), stored as
vectors of a model named `MODEL::ROLE`, so they share the search vectors' storage, FAISS indexes and bookkeeping, but
are never searched by text or listed as models."""

from __future__ import annotations

# Not "#": a model loaded from a weights file is named ARCH/FILE#HASH (encoders/registry.py).
SEPARATOR = "::"


def companion(model: str, role: str) -> str:
    """The name `model`'s `role` vectors are stored under."""
    return f"{model}{SEPARATOR}{role}"


def is_companion(name: str) -> bool:
    """Whether `name` is a companion space's: MODEL::ROLE, a role being a plain word (a weights file's name that
    holds "::" still ends in #HASH)."""
    _, separator, role = name.rpartition(SEPARATOR)
    return bool(separator) and role.isalpha()
