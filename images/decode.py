"""Safe decoding: any file either becomes an upright RGB image with its metadata, or a DecodeError that says why.
Nothing a file contains may crash the caller or exhaust its memory."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlsearch.images.errors import DecodeError, ImageTooLarge
from vlsearch.images.files import read_image_file
from vlsearch.images.formats import check_jpeg_scans, unidentified, without_png_metadata
from vlsearch.images.metadata import ImageMeta, read_exif

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
try:  # HEIC/HEIF (iPhone photos) when the optional pillow-heif is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
    IMAGE_EXTENSIONS |= {".heic", ".heif"}
except ImportError:
    pass

# A 100-megapixel medium-format photo fits; a decompression bomb (a tiny file claiming gigapixels) does not.
DEFAULT_MAX_PIXELS = 128_000_000


def decode_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None,
                 ) -> tuple[Image.Image, ImageMeta]:
    """Decode one image file's bytes into (upright RGB image, metadata).

    `draft`: the caller needs no more than this many pixels on the short side (the model's input and the
    thumbnail, with a margin). A JPEG is then decoded at the smallest of 1/2, 1/4 or 1/8 scale that keeps both
    sides at least `draft` (libjpeg scales in the DCT, so a 12 MP photo decodes in a fraction of the time and
    memory); other formats decode in full. The metadata always gives the file's full size."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        return _decode(data, max_pixels, draft)
    except DecodeError as exc:
        # A PNG's text or ICC chunk that inflates past Pillow's limit (a metadata zip bomb) fails the whole file;
        # the pixels are fine, so decode them without those chunks, as broken EXIF is ignored.
        stripped = without_png_metadata(data) if "MAX_TEXT" in str(exc) else None
        if stripped is None:
            raise
        return _decode(stripped, max_pixels, draft)


def decode_file(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS,
                confine_to: list[Path] | None = None) -> Image.Image:
    """An image file (a query, or an indexed file read again), decoded the same safe way as indexing does. Raises
    DecodeError whose message starts with the path."""
    try:
        data = read_image_file(path, confine_to)
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from None
    return decode_bytes(data, max_pixels)[0]


def _decode(data: bytes, max_pixels: int, draft: int | None) -> tuple[Image.Image, ImageMeta]:
    # Pillow's own check is only the backstop (ours below gives the size and the limit): it is process-wide, so it
    # only ever rises, and a server thread decoding with a lower limit cannot make another thread's image "too big".
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width < 1 or height < 1:
                raise DecodeError(f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageTooLarge(max_pixels, width=width, height=height)
            if image.format in ("JPEG", "MPO"):
                check_jpeg_scans(data)
            exif = read_exif(image)
            image.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the file
            if draft and image.format == "JPEG" and min(width, height) >= 2 * draft:
                image.draft(image.mode, (draft, draft))
            image.load()
            if image.width * image.height > max_pixels:  # a container (ICO) that held a larger image than it said
                raise ImageTooLarge(max_pixels, width=image.width, height=image.height)
            rgb = to_rgb(ImageOps.exif_transpose(image) or image)
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            claimed = re.search(r"\((\d+) pixels\)", str(exc))
            raise ImageTooLarge(max_pixels, pixels=int(claimed[1]) if claimed else None) from None
        except UnidentifiedImageError:
            raise DecodeError(unidentified(data)) from None
        except OSError as exc:
            raise DecodeError(f"truncated or corrupt image data: {exc}") from None
        except (ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, MemoryError) as exc:
            raise DecodeError(f"corrupt image: {type(exc).__name__}: {exc}") from None
    return rgb, exif.meta(width, height, image.format)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and float scaled (not clipped), transparency flattened on white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:  # scaled by the finite values; NaN and infinities (a float TIFF's no-data) become black or white
            finite = np.isfinite(arr)
            lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
            arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")
