"""CLIP-family models through open_clip: the real embedder on machines that have its weights."""

from collections.abc import Callable, Sequence

import numpy as np
import open_clip
import torch
from open_clip.transformer import text_global_pool
from PIL import Image

from vlsearch.encoders.base import Encoder, normalise
from vlsearch.encoders.packed import pack_blocks
from vlsearch.encoders.precision import resolve_precision, weights_dtype
from vlsearch.encoders.preprocess import tensor_preprocess


class ClipEncoder(Encoder):
    """An open_clip model; `checkpoint` is a weights file, or None for random weights (tests, benchmarks)."""

    def __init__(self, name: str, arch: str, checkpoint: str | None, device: str, precision: str = "auto") -> None:
        self.name = name
        self.device = device
        self.precision = resolve_precision(precision, device)
        if checkpoint is None:
            torch.manual_seed(0)  # random weights, but the same ones every time: vectors stay comparable
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=checkpoint, device=device
        )
        self.input_dtype = weights_dtype(self.precision, device)
        self.model = model.eval().to(self.input_dtype)
        # On a GPU, convolutions (the patch embedding, ConvNeXt/ResNet towers) run faster in NHWC.
        self.memory_format = torch.channels_last if device.startswith("cuda") else torch.contiguous_format
        if device.startswith("cuda"):
            self.model = self.model.to(memory_format=self.memory_format)
        # A text query is a few rows through 38M weights: packing them cut ViT-B-32's bf16 query 11.8 -> 8.3 ms p50.
        # Not the image tower (batches of 64 ran 8% slower packed) nor fp32, the reference path.
        self.packed_text = (device == "cpu" and self.precision == "bf16" and isinstance(self.model, open_clip.CLIP)
                            and pack_blocks(self.model.transformer))
        self._preprocess = tensor_preprocess(preprocess)
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
            pixels = batch.to(self.device, self.input_dtype, non_blocking=True, memory_format=self.memory_format)
            return normalise(self.model.encode_image(pixels))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self.autocast():
            if self._trimmable:
                return normalise(self._encode_trimmed(tokens))
            return normalise(self.model.encode_text(tokens))

    @property
    def _trimmable(self) -> bool:
        """A CLIP text tower with a causal mask that pools at the end-of-text token (open_clip's CLIP class)."""
        m = self.model
        return (isinstance(m, open_clip.CLIP) and getattr(m, "text_pool_type", None) == "argmax"
                and getattr(m, "attn_mask", None) is not None)

    def _encode_trimmed(self, tokens: torch.Tensor) -> torch.Tensor:
        """`model.encode_text` run on the tokens up to the batch's last end-of-text, not all 77 positions.

        Exact, not an approximation: under the causal mask position i sees only positions <= i, and the vector is
        read at the end-of-text token (the highest id in each row), so the padding after it never reaches the
        result. A 5-word query costs about a tenth of the full context."""
        m = self.model
        length = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = text_global_pool(m.ln_final(x), tokens, "argmax")
        if m.text_projection is None:
            return x
        return m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection


def _has_text_projection(model: torch.nn.Module) -> bool:
    proj = getattr(model, "text_projection", None)
    return isinstance(proj, torch.Tensor) and proj.ndim == 2


@torch.inference_mode()
def _probe_dim(model: torch.nn.Module) -> int:
    size = model.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    return int(model.encode_image(torch.zeros(1, 3, *size, device=next(model.parameters()).device)).shape[-1])
