"""Safe decoding: any file either becomes an upright RGB image with its metadata, or a DecodeError
that says why. Nothing a file contains may crash the indexer or exhaust its memory."""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
try:  # HEIC/HEIF (iPhone photos) when the optional pillow-heif is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
    IMAGE_EXTENSIONS |= {".heic", ".heif"}
except ImportError:
    pass

# A 100-megapixel medium-format photo fits; a decompression bomb (a tiny file claiming gigapixels) does not.
DEFAULT_MAX_PIXELS = 128_000_000

_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 274
_TAG_MAKE = 271
_TAG_MODEL = 272
_TAG_DATETIME = 306
_TAG_DATETIME_ORIGINAL = 36867


class DecodeError(Exception):
    """A file that is not a usable image; the message is stored with the file's row."""


class ImageTooLarge(DecodeError):
    """An image over the pixel limit (a decompression bomb, or a very large scan)."""


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    display_width: int
    display_height: int
    orientation: int | None
    format: str | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None


def read_image_file(path: Path | str, confine_to: Sequence[Path] | None = None) -> bytes:
    """The bytes of one image file, read so that no file system trick can stall or fool the reader.

    Only a regular file is read: a pipe, device or socket named `.jpg` would block forever or never end (it is
    opened non-blocking, so even the open returns). With `confine_to` (real paths of the server's allowed folders),
    the file actually opened must lie inside them: a symlink swapped in after the folder was listed cannot bring
    an outside file in. Raises OSError (cannot open or read) or DecodeError (not allowed)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise DecodeError("not a regular file (a pipe, device or socket); only image files are read")
        if confine_to is not None:
            opened = _opened_path(fd, path)
            if not any(opened.is_relative_to(root) for root in confine_to):
                raise DecodeError("leads (through a symlink) to a file outside the folders this server may index")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _opened_path(fd: int, path: Path | str) -> Path:
    """The real path of what `fd` refers to: Linux says it exactly; elsewhere resolve the name (racy, the best
    there is)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(path))


def decode_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None,
                 ) -> tuple[Image.Image, ImageMeta]:
    """Decode one image file's bytes into (upright RGB image, metadata).

    `draft`: the caller needs no more than this many pixels on the short side (the model's input and the
    thumbnail, with a margin). A JPEG is then decoded at the smallest of 1/2, 1/4 or 1/8 scale that keeps both
    sides at least `draft` (libjpeg scales in the DCT, so a 12 MP photo decodes in a fraction of the time and
    memory); other formats decode in full. The metadata always gives the file's full size."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width < 1 or height < 1:
                raise DecodeError(f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise _too_big(width, height, max_pixels)
            meta_exif = _exif(image)
            image.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the file
            if draft and image.format == "JPEG" and min(width, height) >= 2 * draft:
                image.draft(image.mode, (draft, draft))
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            rgb = to_rgb(upright)
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(
                f"over the {max_pixels / 1e6:.0f} megapixels limit ({exc}): a decompression bomb, or a very large "
                "scan: raise --max-pixels to index it"
            ) from None
        except UnidentifiedImageError:
            raise DecodeError("not an image Pillow can read (unknown format, or not an image at all)") from None
        except OSError as exc:
            raise DecodeError(f"truncated or corrupt image data: {exc}") from None
        except (ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, MemoryError) as exc:
            raise DecodeError(f"corrupt image: {type(exc).__name__}: {exc}") from None
    orientation, taken_at, make, model = meta_exif
    meta = ImageMeta(
        width=width,
        height=height,
        # Upright size of the full image (EXIF orientations 5-8 turn it a quarter), not of a draft.
        display_width=height if orientation in (5, 6, 7, 8) else width,
        display_height=width if orientation in (5, 6, 7, 8) else height,
        orientation=orientation,
        format=image.format,
        taken_at=taken_at,
        camera_make=make,
        camera_model=model,
    )
    return rgb, meta


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and float scaled (not clipped), transparency flattened on white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
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


def _too_big(width: int, height: int, max_pixels: int) -> DecodeError:
    return ImageTooLarge(
        f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the {max_pixels / 1e6:.0f} MP limit "
        "(a decompression bomb, or a very large scan: raise --max-pixels to index it)"
    )


def _exif(image: Image.Image) -> tuple[int | None, datetime | None, str | None, str | None]:
    """(orientation, taken-at, camera make, camera model); broken EXIF reads as absent, never as an error."""
    try:
        exif = image.getexif()
        orientation = exif.get(_TAG_ORIENTATION)
        sub = exif.get_ifd(_EXIF_IFD)
        taken = _parse_exif_date(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME))
        return (
            int(orientation) if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
            taken,
            _clean(exif.get(_TAG_MAKE)),
            _clean(exif.get(_TAG_MODEL)),
        )
    except Exception:  # EXIF is untrusted bytes; a malformed block must not cost us the image
        return None, None, None, None


def _parse_exif_date(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", "").strip()
    return text[:128] or None
