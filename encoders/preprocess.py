"""A model's own torchvision preprocess, computed on uint8 tensors: the same steps and numbers (1 grey level from
the PIL path at most, 2 for an image enlarged: tests/test_resize.py) in less than half the time. The resize was the
largest step of a decoding worker's after the JPEG decode (bench indexing's decode_steps_ms)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T

from vlsearch.images.resize import pixels_of, resize_pixels

RESAMPLING = {T.InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
              T.InterpolationMode.BILINEAR: Image.Resampling.BILINEAR}
Preprocess = Callable[[Image.Image], torch.Tensor]


class TensorPreprocess:
    """Resize → CenterCrop → float in [0, 1] → Normalize, as `reference` (a torchvision Compose of those steps, with
    any RGB conversion between) computes them on a PIL image."""

    def __init__(self, reference: T.Compose, resize: T.Resize, crop: Sequence[int], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.reference = reference
        self.size = list(resize.size) if isinstance(resize.size, Sequence) else [resize.size]
        self.resample = RESAMPLING[resize.interpolation]
        self.crop = list(crop)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels = resize_pixels(pixels_of(rgb), self.resized_size(rgb.height, rgb.width), self.resample)
        cropped = TF.center_crop(pixels[0], self.crop)
        return cropped.float().div_(255).sub_(self.mean).div_(self.std).contiguous()

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after Resize, by torchvision's rule: one size is the short side, the long one truncated."""
        if len(self.size) == 2:
            return self.size[0], self.size[1]
        short, long = sorted((height, width))
        new_short, new_long = self.size[0], int(self.size[0] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


def tensor_preprocess(reference: Preprocess) -> Preprocess:
    """`reference` as a TensorPreprocess when it is a Compose of steps this knows (the eval transform of open_clip's
    CLIP models, torchvision's ImageNet one); otherwise `reference` itself, unchanged."""
    steps = [s for s in getattr(reference, "transforms", []) if not _converts_mode(s)]
    if len(steps) != 4:
        return reference
    resize, crop, to_tensor, normalize = steps
    if not (isinstance(resize, T.Resize) and resize.interpolation in RESAMPLING and resize.max_size is None
            and resize.antialias in (True, None) and isinstance(crop, T.CenterCrop)
            and type(to_tensor).__name__ in ("ToTensor", "MaybeToTensor") and isinstance(normalize, T.Normalize)
            and not normalize.inplace):
        return reference
    return TensorPreprocess(reference, resize, crop.size, normalize.mean, normalize.std)


def _converts_mode(step: object) -> bool:
    """open_clip's RGB conversion step (a class in new versions, a function in old ones): ours converts anyway."""
    return type(step).__name__ == "MaybeConvertMode" or getattr(step, "__name__", "") == "_convert_to_rgb"
