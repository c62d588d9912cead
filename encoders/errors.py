"""Why a model cannot be loaded, as typed errors: each message says what is wrong without naming a command-line
flag (the API and the CLI add what to change, in their own words), and keeps the facts a caller needs as data.
Each can be pickled with its facts (`__reduce__`): Ray workers raise them, and the driver must read them whole."""

from __future__ import annotations


class WeightsUnavailable(RuntimeError):
    """A model's weights are not on this machine, or cannot be loaded."""


class WeightsNotHere(WeightsUnavailable):
    """A model's weights are not on this machine and the model hub cannot be reached. `model` is the name that
    fetches them on a connected machine, `looked_in` where they were looked for; `file_instead`: a single checkpoint
    file would do too (CLIP models)."""

    def __init__(self, model: str, looked_in: str, repo: str | None = None, file_instead: bool = False) -> None:
        self.model, self.looked_in, self.repo, self.file_instead = model, looked_in, repo, file_instead
        named = f"{model} ({repo})" if repo else model
        super().__init__(f"The weights of {named} are not on this machine and the model hub cannot be reached; "
                         f"copy them from a connected machine. Looked in: {looked_in}.")

    def __reduce__(self):
        return type(self), (self.model, self.looked_in, self.repo, self.file_instead)


class CheckpointUnusable(WeightsUnavailable):
    """A checkpoint file or folder that was named cannot be used; `path` is it, the message says why."""

    def __init__(self, path: object, problem: str, file: bool = False) -> None:
        self.path, self.problem, self.file = path, problem, file
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem, self.file)


class UnknownModel(ValueError):
    """A model name that no preset, open_clip pair or checkpoint answers to. `task`: what it was asked to do
    (caption, answer, match), None for an embedding model; `choices`: the presets that would do; `file_instead`:
    an architecture with a checkpoint file would do too."""

    def __init__(self, spec: str, message: str, task: str | None = None, choices: tuple[str, ...] = (),
                 file_instead: bool = False) -> None:
        self.spec, self.task, self.choices, self.file_instead = spec, task, choices, file_instead
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.spec, str(self), self.task, self.choices, self.file_instead)


class UnknownPretrained(UnknownModel):
    """An open_clip architecture without pretrained weights of that name (perhaps a local file was meant)."""

    def __init__(self, arch: str, pretrained: str, tags: str) -> None:
        self.arch, self.pretrained, self.tags = arch, pretrained, tags
        super().__init__(f"{arch}/{pretrained}", f"open_clip has no pretrained weights {pretrained!r} for {arch} "
                         f"(known tags: {tags})")

    def __reduce__(self):
        return type(self), (self.arch, self.pretrained, self.tags)


class NeedsArchitecture(UnknownModel):
    """A checkpoint file given with a model name that is no open_clip architecture."""

    def __init__(self, arch: str, default: str) -> None:
        self.arch, self.default = arch, default
        super().__init__(arch, f"a checkpoint file needs an open_clip architecture to load into (e.g. {default}); "
                         f"got {arch!r}")

    def __reduce__(self):
        return type(self), (self.arch, self.default)


class DeviceUnavailable(ValueError):
    """A device was asked for that torch cannot use here."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.device, str(self))


class UnknownPrecision(ValueError):
    """A number format that is unknown, or that cannot run on the device asked for."""

    def __init__(self, precision: str, message: str) -> None:
        self.precision = precision
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.precision, str(self))
