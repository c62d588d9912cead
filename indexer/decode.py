"""Safe decoding: any file either becomes an upright RGB image with its metadata, or a DecodeError
that says why. Nothing a file contains may crash the indexer or exhaust its memory."""

from __future__ import annotations

import errno
import io
import os
import re
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
    try:
        return _decode(data, max_pixels, draft)
    except DecodeError as exc:
        # A PNG's text or ICC chunk that inflates past Pillow's limit (a metadata zip bomb) fails the whole file;
        # the pixels are fine, so decode them without those chunks, as broken EXIF is ignored.
        stripped = _without_png_metadata(data) if "MAX_TEXT" in str(exc) else None
        if stripped is None:
            raise
        return _decode(stripped, max_pixels, draft)


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
                raise _too_big(width, height, max_pixels)
            if image.format in ("JPEG", "MPO"):
                _check_scans(data)
            meta_exif = _exif(image)
            image.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the file
            if draft and image.format == "JPEG" and min(width, height) >= 2 * draft:
                image.draft(image.mode, (draft, draft))
            image.load()
            if image.width * image.height > max_pixels:  # a container (ICO) that held a larger image than it said
                raise _too_big(image.width, image.height, max_pixels)
            upright = ImageOps.exif_transpose(image) or image
            rgb = to_rgb(upright)
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            claimed = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(claimed[1]) / 1e6:.6g} megapixels, " if claimed else ""
            raise ImageTooLarge(
                f"{size}over the {max_pixels / 1e6:g} MP limit (a decompression bomb, or a very large scan: raise "
                "--max-pixels to index it)"
            ) from None
        except UnidentifiedImageError:
            raise DecodeError(_unidentified(data)) from None
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


# Progressive JPEGs from cameras and encoders have about 10 scans (mozjpeg up to ~20). libjpeg walks every block of
# the image once per scan, so a few hundred KB of empty scans keep a decoder busy for minutes (a "scan bomb").
MAX_JPEG_SCANS = 256


def _check_scans(data: bytes) -> None:
    """Refuse a JPEG with more than MAX_JPEG_SCANS scans, counted by walking its segments (a marker's bytes inside
    an APP segment, such as an embedded thumbnail's, are not counted)."""
    scans, pos, end = 0, 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return  # not where a marker should be: let the decoder say what is wrong
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        if scans > MAX_JPEG_SCANS:
            raise DecodeError(f"a JPEG with over {MAX_JPEG_SCANS} scans (cameras write about 10): a file made to "
                              "keep the decoder busy, not a photo")
        while True:  # entropy-coded data: up to the next marker that is not a stuffed byte or a restart
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= end:
                return
            following = data[pos + 1]
            if following == 0 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                pos += 1 if following == 0xFF else 2
                continue
            break


_SIGNATURES = (
    (b"\xff\xd8", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _unidentified(data: bytes) -> str:
    """Why Pillow could not even identify the file, as precisely as its first bytes tell."""
    head = data[:512]
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "a HEIC/HEIF image, which this installation cannot decode: install pillow-heif to index it"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "a corrupt AVIF image (its header cannot be read)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a corrupt WebP image (its header cannot be read)"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return f"a corrupt {name} image (its header cannot be read)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in head.lower():
        return "an SVG drawing (vector graphics), not a photo format this indexer reads; export it as PNG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page, not an image (a download that saved the web page instead of the picture?)"
    return "not an image Pillow can read (unknown format, or not an image at all)"


_PNG_METADATA = {b"tEXt", b"zTXt", b"iTXt", b"iCCP"}


def _without_png_metadata(data: bytes) -> bytes | None:
    """The PNG without its text and ICC profile chunks, or None if it is not a PNG or has none."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out, pos, dropped = [data[:8]], 8, False
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if data[pos + 4 : pos + 8] in _PNG_METADATA:
            dropped = True
        else:
            out.append(data[pos:end])
        pos = end
    out.append(data[pos:])
    return b"".join(out) if dropped else None


def _too_big(width: int, height: int, max_pixels: int) -> DecodeError:
    return ImageTooLarge(
        f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the {max_pixels / 1e6:g} MP limit "
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
