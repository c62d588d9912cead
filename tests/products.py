"""A small product catalogue made from the bundled sample photos: each product has reference pictures (the photo,
a crop of it), and a shopper's photo of each (another crop, mirrored, recompressed) that should find it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from PIL import Image, ImageOps

from vlsearch.images.samples import sample_photos

PRODUCTS = {  # product id -> (sample photo, title, brand, category, price, colour)
    "P-ASTRO": ("astronaut", "Space suit portrait print", "ACME", "posters", 29.0, "white"),
    "P-CAT": ("chelsea", "Tabby cat cushion", "Purrfect", "home", 19.5, "orange"),
    "P-COFFEE": ("coffee", "Espresso cup set", "ACME", "kitchen", 45.0, "white"),
    "P-ROCKET": ("rocket", "Rocket launch poster", "Orbit", "posters", 12.0, "blue"),
    "P-HORSE": ("horse", "Horse silhouette sticker", "Stable", "stickers", 3.5, "black"),
    "P-CHINA": ("china", "Pagoda travel print", "Orbit", "posters", 99.0, "green"),
    "P-FLOWER": ("flower", "Dahlia seed pack", "Bloom", "garden", 4.25, "pink"),
}


def crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = image.size
    return image.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))


def shopper_photo(image: Image.Image) -> bytes:
    """What a shopper sends: a tighter, mirrored crop, recompressed at low quality."""
    buf = io.BytesIO()
    ImageOps.mirror(crop(image, (0.1, 0.08, 0.92, 0.95))).convert("RGB").save(buf, format="JPEG", quality=55)
    return buf.getvalue()


def write_catalogue(folder: Path) -> dict[str, bytes]:
    """photos/ and catalogue.csv (two rows for one product, relative image paths) in `folder`; returns the
    shoppers' photos by product id."""
    photos = sample_photos()
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    shoppers, rows = {}, []
    for product_id, (name, title, brand, category, price, colour) in PRODUCTS.items():
        image = photos[name].convert("RGB")
        image.save(folder / "photos" / f"{name}.jpg", quality=92)
        crop(image, (0.0, 0.0, 0.8, 0.8)).save(folder / "photos" / f"{name}-detail.jpg", quality=92)
        rows.append({"product_id": product_id, "title": title, "brand": brand, "category": category,
                     "price": f"{price}", "currency": "eur", "image": f"photos/{name}.jpg", "colour": colour})
        shoppers[product_id] = shopper_photo(image)
    rows.append({"product_id": "P-CAT", "image": "photos/chelsea-detail.jpg|photos/coffee.jpg"})  # a second row
    for product_id, (name, *_) in PRODUCTS.items():
        if product_id != "P-CAT":
            rows.append({"product_id": product_id, "image": f"photos/{name}-detail.jpg"})
    with (folder / "catalogue.csv").open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=["product_id", "title", "brand", "category", "price", "currency", "image",
                                            "colour"])
        out.writeheader()
        out.writerows(rows)
    return shoppers


def importer(lib, encoder, prune: bool = False):
    """The import as `vlsearch products import` runs it: its pictures indexed with `encoder`, no captions."""
    from vlsearch.indexer import Indexer
    from vlsearch.indexer.products import CatalogueImport

    indexer = Indexer(lib, encoder, workers=0, prune=False)
    return CatalogueImport(lib, lambda listed: indexer.run((), [listed]), prune=prune)


def append_rows(catalogue: Path, *lines: str) -> None:
    with catalogue.open("a") as f:
        f.writelines(line + "\n" for line in lines)
