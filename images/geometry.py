"""Image shapes the models can take: very long, thin images cropped, large ones shrunk."""

from __future__ import annotations

from PIL import Image

MAX_ASPECT = 4


def limit_aspect(image: Image.Image) -> Image.Image:
    """Crop a very long, thin image to its central 4:1 part. Our preprocessors resize the short side and
    centre-crop a square, so the pixels the model sees are the same, but a 100000x1 strip no longer inflates
    to gigabytes on the way there."""
    w, h = image.size
    if w > MAX_ASPECT * h:
        keep = MAX_ASPECT * h
        return image.crop(((w - keep) // 2, 0, (w - keep) // 2 + keep, h))
    if h > MAX_ASPECT * w:
        keep = MAX_ASPECT * w
        return image.crop((0, (h - keep) // 2, w, (h - keep) // 2 + keep))
    return image
