"""A corpus of hostile image files: broken, lying, enormous, odd, or not files at all, each named by its kind.

`write_hostile_corpus(folder)` writes them and says, for each, what a correct indexer does with it ("indexed":
an odd but good image, or "error": recorded with a reason) and what an upload of its bytes should get ("2xx",
"4xx", or None where there are no bytes to send: a link loop, a pipe)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, features

from tests.photos import exif_bytes, picture
from vlsearch.images import DEFAULT_MAX_PIXELS


class Hostile(NamedTuple):
    name: str  # the file's name in the folder (os.fsdecode form: a non-UTF-8 name carries surrogate escapes)
    kind: str
    expected: str  # what indexing the folder does with it: "indexed" or "error"
    upload: str | None  # "2xx" or "4xx" for an upload of its bytes; None: nothing to upload


def _jpeg(image: Image.Image | None = None, **save) -> bytes:
    buf = io.BytesIO()
    (image or picture(7, (96, 72))).save(buf, format="JPEG", quality=85, **save)
    return buf.getvalue()


def _encode(image: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(width: int, height: int, mode_rgb: bool = False) -> bytes:
    """A small PNG whose header claims `width` x `height` pixels, with a few rows of data (a decompression bomb's
    shape: a few KB that would decode to gigabytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if mode_rgb else 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * (width * (3 if mode_rgb else 1))
    body = zlib.compress(row * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose logical screen is `width` x `height` with one 1x1 frame."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00;")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A baseline JPEG whose frame header (SOF0) claims `width` x `height`, with the scan cut off."""
    data = bytearray(_jpeg(picture(3, (64, 64))))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    sos = data.find(b"\xff\xda")
    return bytes(data[: sos + 200])


def webp_claiming(width: int, height: int) -> bytes:
    """A lossless WebP (VP8L) whose header claims `width` x `height`, followed by noise."""
    bits = (width - 1) | (height - 1) << 14
    payload = b"\x2f" + struct.pack("<I", bits) + np.random.default_rng(2).bytes(256)
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(payload)) + b"WEBP" + b"VP8L" + struct.pack("<I", len(payload)) \
        + payload


def _stripes(width: int, height: int) -> Image.Image:
    """A long thin picture (too thin for `picture`'s shapes): colour bands along its length."""
    t = np.linspace(0, 1, max(width, height))
    line = np.stack([t * 255, (1 - t) * 255, (t * 7 % 1) * 255], axis=-1).astype(np.uint8)
    arr = np.broadcast_to(line[None, :, :], (height, width, 3)) if width >= height else \
        np.broadcast_to(line[:, None, :], (height, width, 3))
    return Image.fromarray(np.ascontiguousarray(arr))


def jpeg_scan_bomb(scans: int = 20_000) -> bytes:
    """A 4000x4000 grey progressive JPEG with its smallest scan repeated `scans` times: a few hundred KB that keep
    libjpeg busy for seconds to minutes (it walks every block once per scan)."""
    data = _jpeg(Image.new("RGB", (4000, 4000), (120, 130, 140)), progressive=True)
    found, pos = [], 2
    while data[pos + 1] != 0xD9:
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if data[pos + 1] != 0xDA:
            pos += 2 + length
            continue
        end = pos + 2 + length
        while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
            end += 1
        found.append((pos, end))
        pos = end
    start, stop = min(found, key=lambda s: s[1] - s[0])
    return data[:pos] + data[start:stop] * scans + b"\xff\xd9"


def ico_holding(png: bytes) -> bytes:
    """An ICO whose directory says 16x16 but whose one entry is `png`."""
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def _jpeg_with_segments(marker: int, payload: bytes, count: int) -> bytes:
    """A good JPEG with `count` extra segments of `marker` (APP2 ICC, COM, ...) right after SOI."""
    data = _jpeg()
    segment = struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload
    return data[:2] + segment * count + data[2:]


def _icc_segments(size: int) -> bytes:
    """A JPEG carrying an ICC profile of `size` bytes (garbage inside) split over APP2 segments, as the spec
    says."""
    profile = np.random.default_rng(5).bytes(size)
    per = 65519 - 14
    parts = [profile[i : i + per] for i in range(0, len(profile), per)]
    data = _jpeg()
    segments = b"".join(
        struct.pack(">BBH", 0xFF, 0xE2, 2 + 14 + len(p)) + b"ICC_PROFILE\x00" + bytes([i + 1, len(parts)]) + p
        for i, p in enumerate(parts)
    )
    return data[:2] + segments + data[2:]


def _animated(fmt: str) -> bytes:
    frames = [picture(i, (48, 40)) for i in range(4)]
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)


def _oriented(orientation: int) -> bytes:
    """A 64x32 picture stored so that, turned by EXIF `orientation`, it shows the same upright image."""
    from PIL import ImageOps

    upright = picture(11, (64, 32))
    # exif_transpose applies method M; store the inverse so the file shows `upright` once turned.
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = upright.transpose(inverse) if inverse is not None else upright
    data = _jpeg(stored, exif=exif_bytes(orientation=orientation))
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == upright.size
    return data


def _gray16() -> bytes:
    arr = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    return _encode(Image.fromarray(arr), "PNG")  # uint16 -> I;16


def _float_tiff() -> bytes:
    arr = np.linspace(-5.0, 5.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    arr[3, 3] = np.nan
    return _encode(Image.fromarray(arr), "TIFF")  # float32 -> F


def _palette_transparent() -> bytes:
    image = picture(4, (40, 30)).convert("P")
    return _encode(image, "PNG", transparency=0)


def _bad_crc_png() -> bytes:
    data = bytearray(_encode(picture(6, (32, 24)), "PNG"))
    ihdr_crc = 8 + 8 + 13  # signature, IHDR length+type, IHDR data
    data[ihdr_crc : ihdr_crc + 4] = b"\xde\xad\xbe\xef"
    return bytes(data)


def _gif_no_frames() -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff" + b";"


def _isobmff(brand: bytes) -> bytes:
    """The start of a HEIC/AVIF file: an ftyp box, then a meta box cut short."""
    ftyp = struct.pack(">I", 24) + b"ftyp" + brand + b"\x00\x00\x00\x00" + b"mif1" + brand
    return ftyp + struct.pack(">I", 4096) + b"meta" + b"\x00" * 64


def _ztxt_bomb() -> bytes:
    """A good PNG with a compressed text chunk that inflates to 64 MB."""
    data = _encode(picture(8, (32, 24)), "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"\x00" * 64_000_000, 9)
    return data[:33] + _chunk(b"zTXt", text) + data[33:]


def write_hostile_corpus(folder: Path, outside: Path | None = None) -> list[Hostile]:
    """Write the corpus into `folder` (created); `outside` is a folder for the file a symlink leads out to
    (default: a sibling of `folder`). Returns one entry per file, in the order written."""
    folder.mkdir(parents=True, exist_ok=True)
    outside = outside or folder.parent / f"{folder.name}-outside"
    outside.mkdir(parents=True, exist_ok=True)
    good_jpeg = _jpeg()
    good_png = _encode(picture(2, (80, 60)), "PNG")
    noise = np.random.default_rng(1)
    over = int(DEFAULT_MAX_PIXELS**0.5) + 1  # just over the library's pixel limit, square
    entries: list[Hostile] = []

    def add(name: str, kind: str, expected: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        entries.append(Hostile(name, kind, expected, "2xx" if expected == "indexed" else "4xx"))

    # Broken or not images at all.
    add("truncated.jpg", "truncated JPEG", "error", good_jpeg[: len(good_jpeg) // 2])
    add("truncated.png", "truncated PNG", "error", good_png[: len(good_png) // 2])
    add("zero_byte.jpg", "zero-byte file", "error", b"")
    for ext in ("jpg", "png", "webp"):
        add(f"random_bytes.{ext}", f"random bytes named .{ext}", "error", noise.bytes(8192))
    add("svg_renamed.jpg", "SVG renamed .jpg", "error",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>')
    add("html_renamed.jpg", "HTML renamed .jpg", "error", b"<!doctype html><html><body><img src=x></body></html>")
    add("png_bad_crc.png", "PNG with a bad CRC (IHDR)", "error", _bad_crc_png())
    add("gif_no_frames.gif", "GIF with 0 frames", "error", _gif_no_frames())
    add("gif_bad_header.gif", "GIF with an invalid header", "error", b"GIF87b" + b"\x10\x00" * 20)
    add("heic_header.jpg", "HEIC header (no HEIF plugin) named .jpg", "error", _isobmff(b"heic"))
    add("avif_truncated.jpg", "AVIF header cut short named .jpg", "error", _isobmff(b"avif"))
    add("jpeg_no_scan.jpg", "JPEG with SOI and EOI only", "error", b"\xff\xd8\xff\xd9")
    # Decompression bombs: a few KB declaring far more pixels than the limit.
    add("bomb_png_30000.png", "PNG declaring 30000x30000", "error", png_claiming(30_000, 30_000, mode_rgb=True))
    add("bomb_gif_65535.gif", "GIF declaring 65535x65535", "error", gif_claiming(65_535, 65_535))
    add("bomb_jpeg_65000.jpg", "JPEG declaring 65000x65000", "error", jpeg_claiming(65_000, 65_000))
    add("bomb_webp_16383.webp", "WebP declaring 16383x16383", "error", webp_claiming(16_383, 16_383))
    add("bomb_just_over_limit.png", f"PNG declaring {over}x{over}, just over the pixel limit", "error",
        png_claiming(over, over))
    add("bomb_ico_png.jpg", "ICO (named .jpg) saying 16x16 holding a PNG declaring 30000x30000", "error",
        ico_holding(png_claiming(30_000, 30_000)))
    add("bomb_jpeg_scans.jpg", "progressive JPEG with 20000 scans (CPU bomb)", "error", jpeg_scan_bomb())
    add("png_ztxt_bomb.png", "PNG with a 64 MB zTXt text chunk", "indexed", _ztxt_bomb())
    # Odd but good images.
    add("tiny_1x1.png", "1x1 image", "indexed", _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"))
    add("wide_60000x10.png", "60000x10 image", "indexed", _encode(_stripes(60_000, 10), "PNG"))
    add("tall_10x60000.png", "10x60000 image", "indexed", _encode(_stripes(10, 60_000), "PNG"))
    add("cmyk.jpg", "CMYK JPEG", "indexed", _jpeg(picture(12).convert("CMYK")))
    add("gray16.png", "16-bit grey PNG (I;16)", "indexed", _gray16())
    add("float_nan.tif", "32-bit float TIFF with a NaN", "indexed", _float_tiff())
    add("palette_transparent.png", "palette PNG with transparency", "indexed", _palette_transparent())
    add("la.png", "grey with alpha (LA) PNG", "indexed", _encode(picture(13).convert("LA"), "PNG"))
    add("bilevel.png", "1-bit PNG", "indexed", _encode(picture(14).convert("1"), "PNG"))
    add("animated.gif", "animated GIF", "indexed", _animated("GIF"))
    add("animated.webp", "animated WebP", "indexed", _animated("WEBP"))
    add("progressive.jpg", "progressive JPEG", "indexed", _jpeg(picture(15, (120, 90)), progressive=True))
    add("broken_exif.jpg", "JPEG with garbage EXIF (APP1)", "indexed",
        _jpeg_with_segments(0xE1, b"Exif\x00\x00" + noise.bytes(600), 1))
    add("exif_orientation_9.jpg", "JPEG with EXIF orientation 9 (invalid)", "indexed",
        _jpeg(exif=exif_bytes(orientation=9)))
    for o in range(1, 9):
        add(f"orientation_{o}.jpg", f"EXIF orientation {o}", "indexed", _oriented(o))
    add("huge_icc.jpg", "JPEG with a 4 MB ICC profile", "indexed", _icc_segments(4_000_000))
    add("huge_comment.jpg", "JPEG with 4 MB of comments", "indexed", _jpeg_with_segments(0xFE, b"x" * 65_000, 64))
    add("tiff_renamed.jpg", "TIFF named .jpg", "indexed", _encode(picture(16), "TIFF"))
    add("bmp_renamed.jpg", "BMP named .jpg", "indexed", _encode(picture(17), "BMP"))
    add("ico_renamed.jpg", "ICO named .jpg", "indexed", _encode(picture(18, (32, 32)), "ICO"))
    if features.check("avif"):
        add("avif_renamed.jpg", "AVIF named .jpg", "indexed", _encode(picture(19, (32, 24)), "AVIF"))
    # Not plain files.
    sub = folder / "loops"
    sub.mkdir(exist_ok=True)
    os.symlink(".", sub / "again")  # a folder loop: loops/again/again/...
    os.symlink("self_loop.jpg", sub / "self_loop.jpg")
    entries.append(Hostile("loops/self_loop.jpg", "symlink loop (a link to itself)", "error", None))
    os.symlink("no_such_file.jpg", folder / "dangling.jpg")
    entries.append(Hostile("dangling.jpg", "dangling symlink", "error", None))
    (outside / "secret.jpg").write_bytes(_jpeg(picture(20)))
    os.symlink(outside / "secret.jpg", folder / "link_outside.jpg")
    entries.append(Hostile("link_outside.jpg", "symlink to a file outside the folder", "indexed", "2xx"))
    os.mkfifo(folder / "named_pipe.jpg")
    entries.append(Hostile("named_pipe.jpg", "named pipe called .jpg", "error", None))
    locked = folder / "unreadable.jpg"
    locked.write_bytes(_jpeg(picture(21)))
    locked.chmod(0)
    # Root reads a mode-000 file anyway: then it is simply a good image, and the test says so.
    entries.append(Hostile("unreadable.jpg", "unreadable file (chmod 000)",
                           "indexed" if os.access(locked, os.R_OK) else "error", "2xx"))
    odd_name = os.fsdecode(b"latin1_\xe9t\xe9.jpg")
    (folder / odd_name).write_bytes(_jpeg(picture(22)))
    entries.append(Hostile(odd_name, "non-UTF-8 file name", "error", "2xx"))
    return entries


def permissions_enforced(folder: Path) -> bool:
    """False when this process reads files whatever their mode (root, or a file system without modes)."""
    return not os.access(folder / "unreadable.jpg", os.R_OK)
