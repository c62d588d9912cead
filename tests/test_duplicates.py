"""Duplicate groups: exact copies, copies and near-duplicates found through the library's FAISS index, the keeper
each group suggests, forgetting the others (SQLite and FAISS), and `vlsearch duplicates` as a person runs it."""

import json
from datetime import datetime

import numpy as np
import pytest
import typer
from PIL import Image, ImageOps
from sqlalchemy import insert, select
from typer.testing import CliRunner

from vlsearch.library import Library, ModelMismatchError
from vlsearch.library.embeddings import encode_vector
from vlsearch.library.schema import Embedding, ImageRecord
from vlsearch.search.duplicates import (
    SEARCH_THRESHOLDS,
    VISUAL_THRESHOLDS,
    DuplicateGroup,
    comparison_space,
    find_duplicates,
    forget_duplicates,
)

MODEL, DIM = "synthetic", 64
rng = np.random.default_rng(7)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def picture() -> np.ndarray:
    """A vector of a picture of its own: random in 64 dimensions, so about 0.1 from any other."""
    return unit(rng.standard_normal(DIM))


def like(base: np.ndarray, cosine: float) -> np.ndarray:
    """A vector at `cosine` from `base`, in a fresh direction."""
    away = rng.standard_normal(DIM)
    away = unit(away - (away @ base) * base)
    return cosine * base + np.sqrt(1 - cosine**2) * away


class Images:
    """Rows and vectors written straight into a library, as bench/query.py's filled_library does."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self.next_id = 1
        library.ensure_model(MODEL, DIM)

    def add(self, vector: np.ndarray, *, sha: str | None = None, width: int = 800, height: int = 600,
            taken: datetime | None = None, format: str = "JPEG") -> int:
        image_id, self.next_id = self.next_id, self.next_id + 1
        with self.library.session() as s:
            s.execute(insert(ImageRecord.__table__), [{
                "id": image_id, "path": f"/photos/{image_id:03d}.{format.lower()}", "sha256": sha or f"{image_id:064x}",
                "size": 1000 + image_id, "mtime": 1.7e9, "width": width, "height": height, "display_width": width,
                "display_height": height, "format": format, "taken_at": taken, "status": "ok"}])
            s.execute(insert(Embedding.__table__), [{"image_id": image_id, "model": MODEL,
                                                     "vector": encode_vector(vector)}])
            Library.bump_generation(s, MODEL)
        return image_id


@pytest.fixture
def images(library):
    return Images(library)


def grouped(groups: list[DuplicateGroup]) -> list[tuple[str, set[int]]]:
    return [(g.kind, {m.id for m in g.members}) for g in groups]


def test_copies_and_near_duplicates_group_and_distinct_pictures_do_not(library, images):
    a = picture()
    same_bytes = [images.add(a, sha="a" * 64) for _ in range(3)]
    photo = picture()
    copies = [images.add(photo), images.add(like(photo, 0.97)), images.add(like(photo, 0.97))]
    shot = picture()
    burst = [images.add(shot), images.add(like(shot, 0.91))]
    scene = picture()
    mixed = [images.add(scene), images.add(like(scene, 0.97)), images.add(like(scene, 0.91))]
    alone = [images.add(picture()) for _ in range(20)]

    groups = find_duplicates(library, MODEL)
    assert grouped(groups) == [("exact", set(same_bytes)), ("copy", set(copies)), ("near", set(mixed)),
                               ("near", set(burst))]
    assert not set(alone) & {m.id for g in groups for m in g.members}
    near = groups[3]
    assert near.others[0].similarity == pytest.approx(0.91, abs=0.005)  # to the keeper, as stored (float16)


def test_bytes_shared_with_a_slightly_different_vector_still_make_one_exact_group(library, images):
    """Equal files are equal whatever their vectors say (the same bytes indexed by another version of a model)."""
    v = picture()
    ids = [images.add(v, sha="b" * 64), images.add(like(v, 0.5), sha="b" * 64)]
    assert grouped(find_duplicates(library, MODEL)) == [("exact", set(ids))]


def test_a_chain_of_links_is_one_group_and_a_burst_larger_than_k_is_found_whole(library, images):
    a = picture()
    b = like(a, 0.95)
    c = like(b, 0.93)
    chain = [images.add(a), images.add(b), images.add(c)]
    assert float(c @ a) < SEARCH_THRESHOLDS.near  # the ends are not linked themselves
    shot = picture()
    burst = [images.add(like(shot, 0.97)) for _ in range(40)]
    assert sorted(grouped(find_duplicates(library, MODEL, k=8)), key=lambda g: len(g[1])) == [
        ("copy", set(chain)), ("copy", set(burst))]


def test_the_keeper_is_the_largest_then_the_oldest_then_the_more_original_format_then_the_first(library, images):
    def group(*rows: dict) -> list[int]:
        v, sha = picture(), f"{images.next_id:064d}"
        return [images.add(v, sha=sha, **row) for row in rows]

    bigger = group({"width": 400, "height": 300}, {"width": 1600, "height": 1200}, {"width": 800, "height": 600})
    older = group({"taken": datetime(2021, 5, 1)}, {}, {"taken": datetime(2019, 5, 1)})
    lossless = group({"format": "WEBP"}, {"format": "JPEG"}, {"format": "PNG"})
    camera = group({"format": "WEBP"}, {"format": "JPEG"})
    first = group({}, {})
    keepers = {frozenset(m.id for m in g.members): g.keeper.id for g in find_duplicates(library, MODEL)}
    assert keepers == {frozenset(bigger): bigger[1], frozenset(older): older[2], frozenset(lossless): lossless[2],
                       frozenset(camera): camera[1], frozenset(first): first[0]}


def test_forgetting_the_others_removes_them_from_sqlite_and_the_faiss_index(library, images):
    photo = picture()
    keeper = images.add(photo, width=4000, height=3000)
    others = [images.add(like(photo, 0.97)), images.add(like(photo, 0.97), sha="c" * 64),
              images.add(like(photo, 0.97), sha="c" * 64)]
    kept = [images.add(picture()) for _ in range(5)]
    groups = find_duplicates(library, MODEL)
    assert [g.keeper.id for g in groups] == [keeper]

    assert forget_duplicates(library, groups) == others
    with library.session() as s:
        assert set(s.scalars(select(ImageRecord.id))) == {keeper, *kept}
    assert set(library.vector_index(MODEL).ids().tolist()) == {keeper, *kept}
    reopened = Library.open(library.root, create=False)  # the saved FAISS file, not only the one in memory
    assert set(reopened.vector_index(MODEL).ids().tolist()) == {keeper, *kept}
    assert find_duplicates(reopened, MODEL) == []
    assert forget_duplicates(reopened, groups) == []  # gone already: nothing to forget twice
    reopened.close()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_an_approximate_index_finds_the_same_groups(library, images, kind):
    photo, shot = picture(), picture()
    copies = [images.add(photo), images.add(like(photo, 0.97))]
    burst = [images.add(shot), images.add(like(shot, 0.91))]
    for _ in range(300):
        images.add(picture())
    assert library.rebuild_index(MODEL, kind).kind == kind
    groups = find_duplicates(library, MODEL)
    assert grouped(groups) == [("copy", set(copies)), ("near", set(burst))]
    forget_duplicates(library, groups)  # IVF removes the vectors; HNSW cannot, and is rebuilt without them
    assert {copies[1], burst[1]}.isdisjoint(library.vector_index(MODEL).ids().tolist())


def test_thresholds_out_of_order_and_an_unknown_model_are_errors(library, images):
    images.add(picture())
    with pytest.raises(ValueError, match="at most the copy threshold"):
        find_duplicates(library, MODEL, copy_threshold=0.8, near_threshold=0.9)
    with pytest.raises(ModelMismatchError):
        find_duplicates(library, "ViT-B-32")


# -- the command ---------------------------------------------------------------------------------------------------


def cli(*args: str, input: str | None = None) -> tuple[int, str]:
    from vlsearch.api.cli.duplicates import duplicates

    app = typer.Typer()
    app.command()(duplicates)
    result = CliRunner().invoke(app, list(args), input=input)
    return result.exit_code, result.output


@pytest.fixture
def two_groups(library, images):
    v = picture()
    exact = [images.add(v, sha="d" * 64, width=2000, height=1500), images.add(v, sha="d" * 64)]
    photo = picture()
    near = [images.add(photo), images.add(like(photo, 0.91))]
    images.add(picture())
    return exact, near


def test_the_command_lists_groups_in_a_table_and_as_json(library, two_groups):
    exact, near = two_groups
    code, out = cli("--library", str(library.root))
    assert code == 0, out
    assert "exact" in out and "keep" in out and "/photos/001.jpeg" in out and "0.91" in out
    assert "2 groups (1 exact, 1 near); 2 images besides the keepers" in out

    code, out = cli("--library", str(library.root), "--json", "--kind", "near")
    assert code == 0, out
    listed = json.loads(out)
    assert listed["forgotten"] == [] and [g["kind"] for g in listed["groups"]] == ["near"]
    assert [m["id"] for m in listed["groups"][0]["members"]] == near
    assert listed["groups"][0]["keeper"] == near[0]


def test_the_command_forgets_the_others_once_confirmed(library, two_groups):
    exact, near = two_groups
    code, out = cli("--library", str(library.root), "--forget-others", input="n\n")
    assert code == 1 and "Forget 2 images" in out
    assert len(find_duplicates(library, MODEL)) == 2  # nothing forgotten

    code, out = cli("--library", str(library.root), "--kind", "exact", "--forget-others", "--yes", "--json")
    assert code == 0, out
    assert json.loads(out)["forgotten"] == [exact[1]]
    assert grouped(find_duplicates(library, MODEL)) == [("near", set(near))]


@pytest.mark.parametrize(("args", "words"), [
    (("--kind", "similar"), "--kind similar: choose exact, copy, near"),
    (("--copy-threshold", "0.8", "--near-threshold", "0.9"), "at most the copy threshold"),
    (("--model", "ViT-B-32"), "not from 'ViT-B-32'"),
    (("--forget-others", "--json"), "needs --yes"),
])
def test_the_command_says_what_is_wrong(library, two_groups, args, words):
    code, out = cli("--library", str(library.root), *args)
    assert code == 2 and words in " ".join(out.split()), out


def test_the_command_shows_the_measured_defaults():
    from vlsearch.api.cli.duplicates import COPY_DEFAULT, NEAR_DEFAULT

    shown = [tuple(float(v) for v in pair) for pair in zip(COPY_DEFAULT, NEAR_DEFAULT, strict=True)]
    assert shown == [(VISUAL_THRESHOLDS.copy, VISUAL_THRESHOLDS.near), (SEARCH_THRESHOLDS.copy, SEARCH_THRESHOLDS.near)]


# -- real weights ---------------------------------------------------------------------------------------------------


def test_copies_of_real_photos_group_with_their_original_with_real_weights(tmp_path):
    """The offline model's real ImageNet weights: each photo with its resized, recompressed, cropped and bordered
    copies is one group, and no two photos share one; brick and text, whose search vectors score 0.88, stay apart
    because their visual descriptors are compared."""
    from vlsearch.encoders import load_encoder
    from vlsearch.images.samples import sample_photos
    from vlsearch.indexer import Indexer

    folder = tmp_path / "photos"
    folder.mkdir()
    photos = {name: image.convert("RGB") for name, image in sample_photos().items()
              if name in ("chelsea", "coffee", "rocket", "astronaut", "brick", "text")}
    for name, image in photos.items():
        w, h = image.size
        image.save(folder / f"{name}.png")
        image.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(folder / f"{name}-half.jpg", quality=90)
        image.save(folder / f"{name}-q40.jpg", quality=40)
        image.crop((w // 16, h // 16, w - w // 16, h - h // 16)).save(folder / f"{name}-crop.jpg", quality=90)
        ImageOps.expand(image, border=w // 20, fill="white").save(folder / f"{name}-border.jpg", quality=90)
    encoder = load_encoder("offline", model_dir=tmp_path / "models", device="cpu")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, encoder, workers=0).run([folder])

    assert comparison_space(lib, encoder.name) == (f"{encoder.name}::visual", VISUAL_THRESHOLDS)
    groups = find_duplicates(lib, encoder.name)
    named = sorted(sorted(m.path.rsplit("/", 1)[1] for m in g.members) for g in groups)
    assert named == [sorted(f"{name}{suffix}" for suffix in (".png", "-half.jpg", "-q40.jpg", "-crop.jpg",
                                                             "-border.jpg")) for name in sorted(photos)]
    # the bordered copy has the most pixels, the original as much picture and no border: it is kept
    assert sorted(g.keeper.path.rsplit("/", 1)[1] for g in groups) == sorted(f"{name}.png" for name in photos)
    lib.close()


def test_a_border_is_measured_as_no_picture():
    from vlsearch.images.samples import sample_photos
    from vlsearch.search.keeper import border_share

    photo = sample_photos()["chelsea"].convert("RGB").resize((200, 100))
    framed = ImageOps.expand(photo, border=25, fill="white")  # 250 x 150, of which 200 x 100 picture
    assert border_share(framed) == pytest.approx(200 * 100 / (250 * 150), abs=0.01)
    assert border_share(photo) == 1.0
    assert border_share(Image.new("RGB", (50, 50), "grey")) == 1.0  # nothing but "border": a flat picture
