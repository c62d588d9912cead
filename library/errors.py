"""What a library cannot do, as typed errors: each message says what is wrong, naming no command-line flag (the CLI
and the API say what to change, in their own words), and keeps what a remedy needs as data."""

from __future__ import annotations

from pathlib import Path


class LibraryError(Exception):
    """A library cannot do what was asked; the message says why."""


class NotAFolder(LibraryError):
    """A library path that names a file: a library is a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        super().__init__(f"{root} is a file; a library is a folder")

    def __reduce__(self):
        return type(self), (self.root,)


class ModelMismatchError(LibraryError):
    """The library holds no vectors from the model a query is encoded with: `have` are the models it holds (none:
    nothing is indexed yet)."""

    def __init__(self, root: Path, wanted: str, have: list[str]) -> None:
        self.root, self.wanted, self.have = root, wanted, have
        if have:
            message = f"library {root} has vectors from {', '.join(map(repr, have))}, not from {wanted!r}"
        else:
            message = f"library {root} holds no vectors yet; index a folder into it first"
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.root, self.wanted, self.have)


class LibraryBusy(LibraryError):
    """Another indexing run (in this process or another) is writing to the library; `holder` says which."""

    def __init__(self, root: Path, holder: str) -> None:
        self.root, self.holder = root, holder
        super().__init__(f"{holder} is already writing to the library {root}; wait for it to finish (or stop it) "
                         "and try again")

    def __reduce__(self):
        return type(self), (self.root, self.holder)
