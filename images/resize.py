"""Resampling 8-bit RGB pixels: torch's antialiased resize, which computes what Pillow's does (the same kernels;
at most 1 grey level apart when shrinking, 2 when enlarging: tests/test_resize.py) in less than half the time.

Measured on 200 of the indexing benchmark's photos decoded as the indexer does (2-core Xeon VM, one thread):
CLIP's preprocess 5.3 ms an image through Pillow, 2.2 ms through this; a 256 px thumbnail 3.3 against 2.0."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MODES = {Image.Resampling.BICUBIC: "bicubic", Image.Resampling.BILINEAR: "bilinear"}


def pixels_of(image: Image.Image) -> torch.Tensor:
    """An RGB image as a (1, 3, H, W) uint8 tensor whose memory stays H, W, 3 (channels last): the layout torch's
    fast uint8 resize reads."""
    if image.mode != "RGB":
        raise ValueError(f"resize takes RGB images, not mode {image.mode}")
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)


def resize_pixels(pixels: torch.Tensor, size: tuple[int, int],
                  resample: Image.Resampling = Image.Resampling.BICUBIC) -> torch.Tensor:
    """(1, 3, H, W) uint8 → (1, 3, height, width) uint8 for `size` = (height, width), antialiased when shrinking
    as Pillow's resize is."""
    if resample not in MODES:
        raise ValueError(f"resample must be one of {sorted(m.name for m in MODES)}")
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    with torch.inference_mode():
        return F.interpolate(pixels, size=size, mode=MODES[resample], antialias=True)


def resize_image(image: Image.Image, size: tuple[int, int],
                 resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Image.resize for an RGB image, `size` = (width, height) as Pillow takes it."""
    out = resize_pixels(pixels_of(image), (size[1], size[0]), resample)
    return Image.fromarray(out[0].permute(1, 2, 0).numpy(), "RGB")
