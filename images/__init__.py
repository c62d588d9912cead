"""Images as files and pixels: safe reading and decoding (EXIF orientation, reduced-scale JPEG, bombs), the shapes
models take, and thumbnails' JPEG encoding. No models, no storage: every other package builds on this one."""

from vlsearch.images.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, decode_bytes, decode_file, to_rgb
from vlsearch.images.errors import DecodeError, ImageTooLarge
from vlsearch.images.files import read_image_file
from vlsearch.images.geometry import MAX_ASPECT, limit_aspect
from vlsearch.images.metadata import ImageMeta
from vlsearch.images.thumbnails import THUMB_LONG_SIDE, thumbnail_jpeg

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_ASPECT",
    "THUMB_LONG_SIDE",
    "DecodeError",
    "ImageMeta",
    "ImageTooLarge",
    "decode_bytes",
    "decode_file",
    "limit_aspect",
    "read_image_file",
    "thumbnail_jpeg",
    "to_rgb",
]
