"""torch's resize and the tensor preprocess compute what Pillow and the model's own PIL transform compute: the
indexer may use them only because the vectors cannot tell the difference."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from tests.photos import picture
from vlsearch.encoders.preprocess import TensorPreprocess, tensor_preprocess
from vlsearch.images.resize import resize_image
from vlsearch.images.thumbnails import thumbnail_jpeg

SIZES = [(1600, 1200), (1200, 1600), (640, 640), (3000, 700), (225, 224), (100, 60), (7, 300), (1, 1)]
IMAGENET = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def grainy(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Shapes with fine grain: detail a resize must filter the way Pillow does to come out the same."""
    canvas = (max(size[0], 32), max(size[1], 32))
    grain = np.random.default_rng(seed).normal(0, 30, (canvas[1], canvas[0], 3))
    pixels = np.clip(np.asarray(picture(seed, canvas), dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.8)).crop((0, 0, *size))


def grey_levels(a: torch.Tensor, b: torch.Tensor, std) -> float:
    """Largest difference between two normalised model inputs, in 8-bit grey levels."""
    return float(((a - b).abs() * torch.tensor(std).view(-1, 1, 1) * 255).max())


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
@pytest.mark.parametrize(("source", "target"), [((1600, 1200), (299, 224)), ((1200, 1600), (224, 299)),
                                                ((901, 77), (256, 22)), ((60, 40), (336, 224)), ((5, 5), (5, 5))])
def test_resize_is_pillows_to_a_grey_level(source, target, resample):
    image = grainy(source)
    ours = np.asarray(resize_image(image, target, resample), dtype=np.int16)
    pillows = np.asarray(image.resize(target, resample), dtype=np.int16)
    assert ours.shape == pillows.shape == (target[1], target[0], 3)
    assert np.abs(ours - pillows).max() <= (1 if target[0] <= source[0] else 2)  # 2 when enlarging


def test_resize_takes_rgb_only():
    with pytest.raises(ValueError, match="RGB"):
        resize_image(Image.new("L", (10, 10)), (5, 5))


@pytest.mark.parametrize("size", SIZES)
def test_tensor_preprocess_matches_the_models_own_transform(tiny_encoder, size):
    fast = tiny_encoder.preprocess
    assert isinstance(fast, TensorPreprocess), "open_clip's eval transform should have been recognised"
    image = grainy(size, seed=sum(size))
    ours, own = fast(image), fast.reference(image)
    assert ours.shape == own.shape and ours.dtype == own.dtype == torch.float32 and ours.is_contiguous()
    assert grey_levels(ours, own, fast.reference.transforms[-1].std) <= (1.01 if min(size) >= 224 else 2.01)


@pytest.mark.parametrize("size", SIZES)
def test_imagenet_transform_too(size):
    fast = tensor_preprocess(IMAGENET)
    assert isinstance(fast, TensorPreprocess)
    image = grainy(size, seed=3)
    assert fast(image).shape == IMAGENET(image).shape == (3, 224, 224)
    assert grey_levels(fast(image), IMAGENET(image), [0.229, 0.224, 0.225]) <= (1.01 if min(size) >= 256 else 2.01)


def test_other_modes_are_converted_as_the_transform_would(tiny_encoder):
    fast = tiny_encoder.preprocess
    for image in (grainy((320, 240)).convert("L"), grainy((320, 240)).convert("RGBA")):
        assert grey_levels(fast(image), fast.reference(image.convert("RGB")), fast.reference.transforms[-1].std) <= 1.01


@pytest.mark.parametrize("compose", [
    T.Compose([T.Resize(256), T.RandomCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)]),
    T.Compose([T.Resize(256, interpolation=T.InterpolationMode.LANCZOS), T.CenterCrop(224), T.ToTensor(),
               T.Normalize([0.5] * 3, [0.5] * 3)]),
    T.Compose([T.Resize(256, max_size=300), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)]),
    T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]),
    lambda image: torch.zeros(3, 8, 8),
])
def test_an_unknown_transform_is_kept_as_it_is(compose):
    assert tensor_preprocess(compose) is compose


def test_it_travels_to_decoding_workers(tiny_encoder):
    image = grainy((500, 400))
    copy = pickle.loads(pickle.dumps(tiny_encoder.preprocess))
    assert torch.equal(copy(image), tiny_encoder.preprocess(image))


@pytest.mark.parametrize(("size", "expected"), [((1600, 1200), (256, 192)), ((1200, 1600), (192, 256)),
                                                ((4000, 10), (256, 1)), ((200, 100), (200, 100))])
def test_thumbnails_keep_the_aspect_and_never_grow(size, expected):
    with Image.open(io.BytesIO(thumbnail_jpeg(grainy(size)))) as thumb:
        assert thumb.format == "JPEG" and thumb.size == expected
