"""Writes the sample photos that ship inside scikit-image and scikit-learn to a folder, for the demo and
the semantic tests: real photographs, no download, nothing committed to the repository."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# skimage.data functions whose images are bundled with the package (no network needed).
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "horse", "camera", "hubble_deep_field", "immunohistochemistry",
    "page", "text", "retina", "brick", "grass", "gravel", "clock", "colorwheel", "logo", "coins", "moon",
)


def sample_photos() -> dict[str, Image.Image]:
    """name -> image, from whichever of the bundled sample photos this install has."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: dict[str, Image.Image] = {}
    for name in SKIMAGE_PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except Exception as exc:  # a photo this skimage version lacks or would have to download
            log.info("skipping skimage.data.%s: %s", name, exc)
            continue
        if array.dtype == bool:
            array = (~array * 255).astype(np.uint8)
        photos[name] = Image.fromarray(array)
    bunch = load_sample_images()
    for filename, array in zip(bunch.filenames, bunch.images, strict=True):
        photos[Path(filename).stem] = Image.fromarray(array)
    return photos


def write_samples(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image in sample_photos().items():
        path = folder / (f"{name}.png" if image.mode in ("RGBA", "LA") else f"{name}.jpg")
        if not path.exists():
            (image if path.suffix == ".png" else image.convert("RGB")).save(path, quality=92)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, help="where to write the photos")
    args = parser.parse_args()
    paths = write_samples(args.folder)
    print(f"{len(paths)} sample photos in {args.folder}")


if __name__ == "__main__":
    main()
