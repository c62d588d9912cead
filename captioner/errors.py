"""What an image-to-text model cannot do, as typed errors: the message says what is missing without naming a
command-line flag; `task` says which kind of model would do it, so the API and the CLI can say how to load one."""

from __future__ import annotations

# caption, answer (VQA) and match (image-text matching) are the models' tasks; ocr is the OCR engine's.
TASK_NOUNS = {"caption": "captions", "answer": "questions", "match": "image-text matching", "ocr": "OCR"}
TASK_VERBS = {"caption": "write captions", "answer": "answer questions", "match": "match images and texts"}


class NotSupported(RuntimeError):
    """A model was asked for what it cannot do honestly (never a guess instead). `task`: what kind of model can;
    `because`: the underlying refusal, when this one wraps another."""

    def __init__(self, message: str, task: str, because: str | None = None) -> None:
        self.task, self.because = task, because
        super().__init__(message)

    def __reduce__(self):  # pickled with its facts: model workers raise it in other processes
        return type(self), (str(self), self.task, self.because)


class ModelMissing(ValueError):
    """A request needs a model of kind `task` (caption, answer, match) and none was given."""

    def __init__(self, message: str, task: str) -> None:
        self.task = task
        super().__init__(message)

    def __reduce__(self):
        return type(self), (str(self), self.task)


class WrongTask(ValueError):
    """A model named for one task that does another: `spec` cannot do `task`. `fits`: the task a checkpoint folder
    does instead; `choices`: presets that can do `task`."""

    def __init__(self, spec: str, task: str, message: str, fits: str | None = None,
                 choices: tuple[str, ...] = ()) -> None:
        self.spec, self.task, self.fits, self.choices = spec, task, fits, choices
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.spec, self.task, str(self), self.fits, self.choices)
