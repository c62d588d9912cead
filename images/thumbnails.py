"""Thumbnails' pixels: the small JPEG every indexed image is shown by (where they are kept is library/thumbs.py)."""

from __future__ import annotations

import io

from PIL import Image

THUMB_LONG_SIDE = 256
THUMB_QUALITY = 85


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """An RGB image shrunk to THUMB_LONG_SIDE on its long side, as JPEG bytes."""
    thumb = image.copy()
    # Bicubic (Pillow's default for thumbnails): a quarter cheaper than Lanczos, no visible difference at 256 px.
    thumb.thumbnail((THUMB_LONG_SIDE, THUMB_LONG_SIDE), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return out.getvalue()
