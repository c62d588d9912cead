"""Image shapes the models can take: very long, thin images cropped, large ones shrunk."""

from __future__ import annotations

import math

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


def crop_box(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The part of `image` inside `box` = (left, top, right, bottom) as fractions of its width and height (a region
    search: the shoes in a photo of a whole outfit), at least one pixel each way."""
    left, top, right, bottom = check_box(box)
    w, h = image.size
    x0, y0 = min(int(left * w), w - 1), min(int(top * h), h - 1)
    return image.crop((x0, y0, max(x0 + 1, round(right * w)), max(y0 + 1, round(bottom * h))))


def check_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """`box` if it is a region: four fractions, left < right and top < bottom; ValueError saying how otherwise."""
    if len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise ValueError(f"a box is four numbers, left,top,right,bottom, not {box!r}")
    left, top, right, bottom = box
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise ValueError(f"the box {','.join(f'{v:g}' for v in box)} must be left,top,right,bottom as fractions of "
                         "the image, with 0 <= left < right <= 1 and 0 <= top < bottom <= 1")
    return left, top, right, bottom


def box_from_text(text: str) -> tuple[float, float, float, float]:
    """A box written as four comma-separated numbers ("0.5,0.6,1,1"); ValueError if it is not that (its range is
    check_box's to judge)."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"{text!r} is not four numbers")
    return box
