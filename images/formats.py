"""Reading inside the bytes of a file before (or instead of) decoding it: JPEG scan counts, what a file Pillow
cannot identify really is, and PNG metadata chunks."""

from __future__ import annotations

from vlsearch.images.errors import DecodeError

# Progressive JPEGs from cameras and encoders have about 10 scans (mozjpeg up to ~20). libjpeg walks every block of
# the image once per scan, so a few hundred KB of empty scans keep a decoder busy for minutes (a "scan bomb").
MAX_JPEG_SCANS = 256


def check_jpeg_scans(data: bytes) -> None:
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
        pos = _after_entropy_coded_data(data, pos)
        if pos < 0:
            return


def _after_entropy_coded_data(data: bytes, pos: int) -> int:
    """Where the next marker after a scan's entropy-coded data starts (stuffed bytes and restarts skipped); -1 at
    the end of the data."""
    end = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= end:
            return -1
        following = data[pos + 1]
        if following == 0 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


_SIGNATURES = (
    (b"\xff\xd8", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def unidentified(data: bytes) -> str:
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


def without_png_metadata(data: bytes) -> bytes | None:
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
