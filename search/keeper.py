"""Which image of a duplicate group to keep: the one with the most picture in it, then the earliest taken, then the
format more likely original. "Picture" leaves out a uniform border: a copy framed in white has more pixels than its
original, not more picture."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageChops, UnidentifiedImageError

from vlsearch.library import ImageRecord

log = logging.getLogger(__name__)

# Which file of a group is more likely the original: lossless files first, then camera formats, then the rest
# (WEBP, GIF, AVIF: what web pages and messengers recompress to).
FORMAT_RANK = {"PNG": 0, "TIFF": 0, "BMP": 0, "JPEG": 1, "MPO": 1, "HEIF": 1}
OTHER_FORMATS = 2
# How far (0-255, any channel) a thumbnail pixel may stray from a border's colour and still be border: JPEG at the
# thumbnails' quality rings up to ~20 levels next to an edge.
BORDER_TOLERANCE = 24
# A 256-px thumbnail measures a border to about a pixel a side: pictures within 3% count as the same size.
SAME_PICTURE = 0.97


def choose_keeper(records: list[ImageRecord], library_root: Path) -> ImageRecord:
    """The image to keep of a group: by `keeper_rank`; where sizes differ and some image has a border, first those
    holding about as much picture as the most (SAME_PICTURE), unbordered before bordered."""
    if len({(r.width, r.height) for r in records}) == 1:
        return min(records, key=keeper_rank)
    share = {r.id: picture_share(library_root, r) for r in records}
    if all(v == 1.0 for v in share.values()):
        return min(records, key=keeper_rank)
    picture = {r.id: (r.width or 0) * (r.height or 0) * share[r.id] for r in records}
    most = max(picture.values())
    return min(records, key=lambda r: (picture[r.id] < SAME_PICTURE * most, share[r.id] < 1.0, *keeper_rank(r)))


def keeper_rank(row: ImageRecord) -> tuple:
    """Sorts the image to keep first: the most pixels, then the earliest taken (unknown dates last), then
    FORMAT_RANK, then the lowest id."""
    return (-(row.width or 0) * (row.height or 0), row.taken_at is None, row.taken_at or datetime.max,
            FORMAT_RANK.get(row.format or "", OTHER_FORMATS), row.id)


def picture_share(library_root: Path, row: ImageRecord) -> float:
    """The share of the image inside a uniform border (the colour of its top-left corner), read from its thumbnail;
    1.0 when it has none, or when the thumbnail cannot be read."""
    if not row.thumbnail:
        return 1.0
    try:
        with Image.open(library_root / row.thumbnail) as thumb:
            return border_share(thumb.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        log.debug("no border measured for %s: %s", row.path, exc)
        return 1.0


def border_share(image: Image.Image) -> float:
    """The share of `image` inside the box that holds everything differing from its top-left pixel's colour by
    more than BORDER_TOLERANCE; 1.0 when the box is the whole image or nothing differs (a flat image). A flat
    background reaching the edges counts as border too: alike in every copy, it leaves their order as it was."""
    flat = Image.new("RGB", image.size, image.getpixel((0, 0)))
    red, green, blue = ImageChops.difference(image, flat).split()
    most = ImageChops.lighter(ImageChops.lighter(red, green), blue)  # the largest difference of any channel
    box = most.point(lambda v: 255 if v > BORDER_TOLERANCE else 0).getbbox()
    if box is None:
        return 1.0
    return (box[2] - box[0]) * (box[3] - box[1]) / (image.width * image.height)
