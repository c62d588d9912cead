"""Synthetic photos for tests: distinct, deterministic pictures, and files that are broken on purpose."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def picture(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A picture of a few coloured shapes; different seeds give visibly different pictures."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, size[0] - 10)), int(rng.integers(0, size[1] - 10))
        x1, y1 = x0 + int(rng.integers(8, size[0])), y0 + int(rng.integers(8, size[1]))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return image


def exif_bytes(taken: datetime | None = None, make: str | None = None, model: str | None = None,
               orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[274] = orientation
    if make:
        exif[271] = make
    if model:
        exif[272] = model
    if taken:
        exif.get_ifd(0x8769)[36867] = taken.strftime("%Y:%m:%d %H:%M:%S")
    return exif.tobytes()


def write_photo(path: Path, seed: int, size: tuple[int, int] = (96, 72), **exif) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = picture(seed, size)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=90, exif=exif_bytes(**exif) if exif else b"")
    else:
        image.save(path)
    return path


def write_photos(folder: Path, count: int, start: int = 0) -> list[Path]:
    return [write_photo(folder / f"photo_{i:04d}.jpg", seed=i) for i in range(start, start + count)]


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A small PNG whose header claims a huge picture: the shape of a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    body = zlib.compress(row * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def broken_corpus(folder: Path) -> dict[str, Path]:
    """Files with image extensions that are not usable images, keyed by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    picture(1, (200, 150)).save(good, format="JPEG", quality=90)
    data = good.getvalue()
    files = {
        "zero-byte": (folder / "empty.jpg", b""),
        "truncated jpeg": (folder / "truncated.jpg", data[: len(data) // 2]),
        "text named jpg": (folder / "notes.jpg", b"these are my holiday notes, not a picture\n" * 20),
        "html named png": (folder / "page.png", b"<!doctype html><html><body>hello</body></html>"),
        "random bytes": (folder / "noise.webp", np.random.default_rng(3).bytes(4096)),
        "decompression bomb": (folder / "bomb.png", png_bomb()),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {kind: path for kind, (path, _) in files.items()}


def odd_but_valid(folder: Path) -> dict[str, tuple[Path, tuple[int, int]]]:
    """Images in awkward modes that must decode: name -> (path, upright width x height)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, tuple[int, int]]] = {}
    base = picture(7, (120, 80))
    base.convert("CMYK").save(folder / "cmyk.jpg")
    out["cmyk"] = (folder / "cmyk.jpg", (120, 80))
    sixteen = (np.linspace(0, 65535, 120 * 80).reshape(80, 120)).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "sixteen.png")
    out["16-bit"] = (folder / "sixteen.png", (120, 80))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.gif", transparency=0)
    out["palette with transparency"] = (folder / "palette.gif", (120, 80))
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    out["alpha"] = (folder / "alpha.png", (120, 80))
    frames = [picture(s, (60, 40)).convert("P") for s in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["animated"] = (folder / "animated.gif", (60, 40))
    base.save(folder / "rotated.jpg", exif=exif_bytes(orientation=6))
    out["exif orientation 6"] = (folder / "rotated.jpg", (80, 120))
    return out
