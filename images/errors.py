"""What is wrong with an image, as typed errors: the message says it in words fit to store with a file's row and
to show anywhere; the limit a file ran into is kept as data, so a caller can say how to raise it."""

from __future__ import annotations


class DecodeError(Exception):
    """A file that is not a usable image; the message says why."""


class ImageTooLarge(DecodeError):
    """An image over the pixel limit: a decompression bomb, or a very large scan. `pixels` is what the file claims
    (None when it does not say), `limit` the limit it ran into."""

    def __init__(self, limit: int, pixels: int | None = None, width: int | None = None,
                 height: int | None = None) -> None:
        self.limit, self.pixels, self.width, self.height = limit, pixels, width, height
        if width is not None and height is not None:
            size = f"{width}x{height} is {width * height / 1e6:.0f} megapixels, "
        elif pixels is not None:
            size = f"{pixels / 1e6:.6g} megapixels, "
        else:
            size = ""
        super().__init__(f"{size}over the {limit / 1e6:g} MP limit (a decompression bomb, or a very large scan)")

    def __reduce__(self):  # pickled with its facts: decoding runs in worker processes
        return type(self), (self.limit, self.pixels, self.width, self.height)
