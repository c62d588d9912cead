"""What an image file says of itself: its size, orientation, format, when it was taken and with what camera."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from PIL import Image

_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 274
_TAG_MAKE = 271
_TAG_MODEL = 272
_TAG_DATETIME = 306
_TAG_DATETIME_ORIGINAL = 36867


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


@dataclass(frozen=True)
class Exif:
    orientation: int | None = None
    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None

    def meta(self, width: int, height: int, file_format: str | None) -> ImageMeta:
        """The file's metadata: `width` x `height` as stored, and its upright size (EXIF orientations 5-8 turn the
        image a quarter), of the full image, not of a reduced-scale decode."""
        turned = self.orientation in (5, 6, 7, 8)
        return ImageMeta(width=width, height=height, display_width=height if turned else width,
                         display_height=width if turned else height, orientation=self.orientation,
                         format=file_format, taken_at=self.taken_at, camera_make=self.camera_make,
                         camera_model=self.camera_model)


def read_exif(image: Image.Image) -> Exif:
    """Orientation, date taken and camera; broken EXIF reads as absent, never as an error."""
    try:
        exif = image.getexif()
        orientation = exif.get(_TAG_ORIENTATION)
        sub = exif.get_ifd(_EXIF_IFD)
        return Exif(
            orientation=int(orientation) if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
            taken_at=_parse_date(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME)),
            camera_make=_clean(exif.get(_TAG_MAKE)),
            camera_model=_clean(exif.get(_TAG_MODEL)),
        )
    except Exception:  # EXIF is untrusted bytes; a malformed block must not cost us the image
        return Exif()


def _parse_date(value: object) -> datetime | None:
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
