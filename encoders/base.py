"""The one interface every image/text embedder offers: batches in, L2-normalised float32 rows out."""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from vlsearch.encoders.errors import DeviceUnavailable
from vlsearch.encoders.precision import autocast
from vlsearch.images import limit_aspect


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise DeviceUnavailable(device, f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(device, "the cuda device was asked for, but torch sees no CUDA GPU; use the cpu or "
                                "auto")
    return device


def normalise(vectors: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()


# The roles of companion vectors (stored as MODEL::ROLE, library/spaces.py):
VISUAL = "visual"  # unit vectors of what an image looks like: what copies of one picture share (duplicates)
CLASSES = "classes"  # sqrt of a classifier's class probabilities: unit vectors, p = v**2 (tags)


@dataclass
class ImageEmbeddings:
    """A batch's search vectors, and the companion vectors (library/spaces.py) the same forward pass gave, by role."""

    vectors: np.ndarray
    companions: dict[str, np.ndarray] = field(default_factory=dict)


class Encoder(ABC):
    """Embeds images and texts into one space where inner product means similarity."""

    name: str
    dim: int
    device: str
    precision: str = "fp32"  # what it computes in: fp32, bf16 or fp16 (encoders/precision.py)
    input_size: int = 224  # the short side `preprocess` resizes to: decoding need not keep more than that
    companions: dict[str, int] = {}  # role -> dimension of the companion vectors `embed_image_tensors` gives
    class_names: list[str] | None = None  # the classes of a CLASSES companion, in its order

    @property
    @abstractmethod
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL RGB image -> model input tensor; runs in decoding worker processes."""

    @abstractmethod
    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """A stacked batch of `preprocess` outputs -> (n, dim) normalised vectors."""

    def embed_image_tensors(self, batch: torch.Tensor) -> ImageEmbeddings:
        """What indexing stores of a batch: its search vectors and every companion in `companions`."""
        return ImageEmbeddings(self.encode_image_tensors(batch))

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n, dim) normalised vectors."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = [self.preprocess(limit_aspect(im.convert("RGB"))) for im in images]
        return self.encode_image_tensors(torch.stack(batch))

    def autocast(self) -> torch.autocast:
        """The GPU's autocast for `precision` (encoders/precision.py); on the CPU the weights carry the format."""
        return autocast(self.precision, self.device)
