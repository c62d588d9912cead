"""CLIP-family models through open_clip: the real embedder on machines that have its weights."""

from collections.abc import Callable, Sequence

import numpy as np
import open_clip
import torch
from PIL import Image

from encoders.base import Encoder, normalise


class ClipEncoder(Encoder):
    """An open_clip model; `checkpoint` is a weights file, or None for random weights (tests, benchmarks)."""

    def __init__(self, name: str, arch: str, checkpoint: str | None, device: str) -> None:
        self.name = name
        self.device = device
        if checkpoint is None:
            torch.manual_seed(0)  # random weights, but the same ones every time: vectors stay comparable
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=checkpoint, device=device
        )
        self.model = model.eval()
        self._preprocess = preprocess
        size = self.model.visual.image_size
        self.input_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.dim = int(self.model.text_projection.shape[1]) if _has_text_projection(model) else _probe_dim(model)

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._preprocess

    @torch.inference_mode()
    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        with self.autocast():
            return normalise(self.model.encode_image(batch.to(self.device, non_blocking=True)))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self.autocast():
            return normalise(self.model.encode_text(tokens))


def _has_text_projection(model: torch.nn.Module) -> bool:
    proj = getattr(model, "text_projection", None)
    return isinstance(proj, torch.Tensor) and proj.ndim == 2


@torch.inference_mode()
def _probe_dim(model: torch.nn.Module) -> int:
    size = model.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    return int(model.encode_image(torch.zeros(1, 3, *size, device=next(model.parameters()).device)).shape[-1])
