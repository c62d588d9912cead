"""OCR with RapidOCR (PP-OCR models in ONNX, shipped inside the rapidocr-onnxruntime wheel: no download)."""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.5  # lines PP-OCR is less sure of than this are noise more often than text
MIN_SIDE = 8  # no legible text fits in fewer pixels than this; RapidOCR would upscale such a sliver to gigabytes
MAX_SIDE = 2000  # RapidOCR's own limit: larger images are shrunk to it, so shrink first (padding grows with it)
MAX_ASPECT = 4  # longer/shorter side; thinner images are padded to this (RapidOCR's detector upscales the short side)


def normalise_text(text: str) -> str:
    """Lower case, quotes and punctuation dropped, spaces collapsed: how OCR text and asked-for words compare."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def holds_words(text: str, words: str) -> bool:
    """`words` appear in OCR `text` as whole words, case and punctuation aside ("TO" is not in "STOP")."""
    return f" {normalise_text(words)} " in f" {normalise_text(text)} "


def quote_text(text: str, limit: int) -> str:
    """OCR text on one line, cut at a word boundary to about `limit` characters (with " …" when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit].rsplit(" ", 1)[0] + " …"


class OcrUnavailable(RuntimeError):
    """The OCR engine (rapidocr-onnxruntime) is not installed; `reason` is the import's own error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"OCR needs rapidocr-onnxruntime, which is not installed here ({reason})")

    def __reduce__(self):
        return type(self), (self.reason,)


class OcrFailed(RuntimeError):
    """The OCR engine failed on one image (the message says why); other images are unaffected."""


def _for_detection(rgb: Image.Image) -> Image.Image | None:
    """The image as the detector should see it: None when too thin to hold text, padded with its border colour
    when elongated (a 3000x20 banner becomes 3000x750: the same text at bounded memory)."""
    w, h = rgb.size
    if min(w, h) < MIN_SIDE:
        return None
    if max(w, h) <= MAX_ASPECT * min(w, h):
        return rgb
    pixels = np.asarray(rgb)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean(axis=0)
    size = (w, -(-w // MAX_ASPECT)) if w > h else (-(-h // MAX_ASPECT), h)
    canvas = Image.new("RGB", size, tuple(int(c) for c in border))
    canvas.paste(rgb, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


class OcrReader:
    """Reads the text in an image, line by line. Remembers its last results by image content, so the offline
    caption and the OCR stage of one indexing run read each image once."""

    engine = "rapidocr"

    def __init__(self, remember: int = 64) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise OcrUnavailable(str(exc)) from None
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        self._ocr = RapidOCR()
        self._remember = remember
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # one inference at a time per engine; the cache is shared

    def read(self, image: Image.Image) -> str:
        """The text found, lines joined by newlines in reading order; "" when there is none.

        Raises OcrFailed if the engine fails on this image."""
        rgb = image.convert("RGB")
        key = hashlib.blake2b(rgb.tobytes(), digest_size=16, person=str(rgb.size).encode()[:16]).hexdigest()
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return self._seen[key]
            if max(rgb.size) > MAX_SIDE:  # before padding: a 100000x10 strip padded first would be 100000x25000
                rgb.thumbnail((MAX_SIDE, MAX_SIDE))  # in place: `convert` made rgb a copy
            padded = _for_detection(rgb)
            result = None
            if padded is not None:
                bgr = np.ascontiguousarray(np.asarray(padded)[:, :, ::-1])
                try:
                    result, _ = self._ocr(bgr)
                except Exception as exc:  # an engine error on one image must not end a run or a request
                    raise OcrFailed(f"OCR failed on this {rgb.width}x{rgb.height} image: "
                                    f"{type(exc).__name__}: {exc}") from exc
            lines = [str(text).strip() for _, text, score in (result or []) if float(score) >= MIN_CONFIDENCE]
            # A lone character is nearly always a texture read as a letter (a cat's fur as "O").
            text = "\n".join(line for line in lines if len("".join(line.split())) >= 2)
            self._seen[key] = text
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return text


@functools.lru_cache(maxsize=1)
def ocr_reader() -> OcrReader:
    """The process's one OCR engine (its models load once)."""
    return OcrReader()
