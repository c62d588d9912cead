"""Companion vectors (library/spaces.py): what a model computes beside its search vector in the same pass (a visual
descriptor, a classifier's probabilities) is stored at indexing, kept in step with the search vector, filled in for
images indexed before, never offered as a model, and used by duplicates and tags."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from sqlalchemy import delete, select

from tests.photos import picture
from vlsearch.encoders import Encoder
from vlsearch.encoders.base import CLASSES, VISUAL, ImageEmbeddings, normalise
from vlsearch.indexer import Indexer
from vlsearch.indexer.tagging import Tagger
from vlsearch.indexer.vocabulary import ensure_default
from vlsearch.library import Embedding, ImageRecord, Library, ModelRecord
from vlsearch.library.spaces import companion
from vlsearch.search.duplicates import SEARCH_THRESHOLDS, VISUAL_THRESHOLDS, comparison_space, find_duplicates
from vlsearch.search.tags import image_tags

CLASS_NAMES = ["tabby", "espresso", "daisy"]  # three of the default vocabulary's ImageNet labels


class Companioned(Encoder):
    """Search vectors from an image's mean colour; a visual descriptor of its 4x4 pixels; classes from its colour."""

    name, dim, device = "companioned", 4, "cpu"
    companions = {VISUAL: 48, CLASSES: 3}
    class_names = CLASS_NAMES

    @property
    def preprocess(self):
        return lambda image: torch.from_numpy(np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32)
                                              / 255).permute(2, 0, 1)

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        return normalise(torch.cat([batch.mean((2, 3)), torch.ones(len(batch), 1)], dim=1))

    def embed_image_tensors(self, batch: torch.Tensor) -> ImageEmbeddings:
        probs = torch.softmax(4 * batch.mean((2, 3)), dim=1)
        return ImageEmbeddings(self.encode_image_tensors(batch),
                               {VISUAL: normalise(batch.flatten(1) - 0.5), CLASSES: probs.sqrt().numpy()})

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(torch.ones(len(texts), self.dim))


@pytest.fixture
def indexed(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(4):
        picture(seed, (64, 48)).save(folder / f"p{seed}.png")
    picture(0, (64, 48)).resize((32, 24)).save(folder / "p0-half.png")  # a copy of p0
    lib = Library.open(tmp_path / "lib")
    encoder = Companioned()
    Indexer(lib, encoder, workers=0).run([folder])
    yield lib, encoder, folder
    lib.close()


def counts(lib: Library) -> dict[str, int]:
    with lib.session() as s:
        return {name: lib.vector_count(name) for name in s.scalars(select(ModelRecord.name))}


def test_indexing_stores_companions_and_offers_only_the_model(indexed):
    lib, encoder, _ = indexed
    assert counts(lib) == {"companioned": 5, "companioned::visual": 5, "companioned::classes": 5}
    assert [m.name for m in lib.models()] == ["companioned"] and lib.default_model() == "companioned"
    _, roots = lib.load_vectors(companion(encoder.name, CLASSES))
    assert np.allclose(np.square(roots).sum(axis=1), 1, atol=2e-3)  # probabilities, stored as their square roots


def test_duplicates_compare_visual_descriptors_when_every_image_has_one(indexed, caplog):
    lib, encoder, folder = indexed
    assert comparison_space(lib, encoder.name) == ("companioned::visual", VISUAL_THRESHOLDS)
    groups = find_duplicates(lib, encoder.name)
    assert [sorted(m.path.rsplit("/", 1)[1] for m in g.members) for g in groups] == [["p0-half.png", "p0.png"]]
    with lib.session() as s:  # as if indexed before the model stored them
        s.execute(delete(Embedding).where(Embedding.model == "companioned::visual", Embedding.image_id <= 2))
    with caplog.at_level(logging.WARNING):
        assert comparison_space(lib, encoder.name) == ("companioned", SEARCH_THRESHOLDS)
    assert "2 of 5 images lack" in caplog.text and "vlsearch index" in caplog.text
    report = Indexer(lib, encoder, workers=0).run([folder])
    assert (report.embedded, report.unchanged) == (2, 3)  # only the two lacking one ran through the model again
    assert comparison_space(lib, encoder.name)[0] == "companioned::visual"


def test_a_changed_file_gets_new_companions_and_a_forgotten_one_loses_them(indexed):
    lib, encoder, folder = indexed
    space = companion(encoder.name, VISUAL)
    with lib.session() as s:
        p1 = s.scalar(select(ImageRecord.id).where(ImageRecord.path == str(folder / "p1.png")))
        generation = s.get(ModelRecord, space).generation
    before = lib.load_vectors(space, [p1])[1][0]
    picture(9, (64, 48)).save(folder / "p1.png")
    Indexer(lib, encoder, workers=0).run([folder])
    after = lib.load_vectors(space, [p1])[1][0]
    assert float(before @ after) < 0.99
    with lib.session() as s:
        assert s.get(ModelRecord, space).generation > generation  # its FAISS index is rebuilt when next used
    assert p1 in lib.vector_index(space).search(after[None], 1)[1][0]
    lib.forget_images([p1])
    assert counts(lib) == {"companioned": 4, "companioned::visual": 4, "companioned::classes": 4}
    assert p1 not in lib.vector_index(space).search(after[None], 4)[1][0]


def test_the_default_vocabulary_is_scored_by_the_models_own_classifier(indexed):
    """Images with stored probabilities are tagged by them; one indexed before they were stored is tagged
    zero-shot, then by its probabilities once the next index run has filled them in."""
    lib, encoder, folder = indexed
    ensure_default(lib)
    with lib.session() as s:
        s.execute(delete(Embedding).where(Embedding.model == "companioned::classes", Embedding.image_id == 1))
    Tagger(lib, encoder).run()
    assert image_tags(lib, 1) == []  # zero-shot: this encoder's texts are all one vector, so no label stands out
    Indexer(lib, encoder, workers=0).run([folder])  # fills image 1's in, and tags it again
    ids, roots = lib.load_vectors(companion(encoder.name, CLASSES))
    for image_id, root in zip(ids.tolist(), roots, strict=True):
        tags = [t for t in image_tags(lib, image_id) if t.vocabulary == "default"]
        expected = {name: float(p) for name, p in zip(CLASS_NAMES, np.square(root), strict=True) if p >= 0.1}
        assert expected  # three classes: the likeliest has at least a third
        assert {t.label: pytest.approx(t.score, abs=1e-6) for t in tags} == expected


def test_only_model_role_names_are_companions():
    from vlsearch.library.spaces import is_companion

    assert is_companion(companion("offline", VISUAL)) and is_companion("ViT-B-32/laion2b_s34b_b79k::classes")
    assert not is_companion("ViT-B-32/open_clip_model.safetensors#0123456789ab")  # a weights file's model
    assert not is_companion("ViT-B-32/odd::name.pt#0123456789ab") and not is_companion("offline")
