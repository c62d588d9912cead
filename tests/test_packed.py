"""Packed transformer blocks (encoders/packed.py) compute what open_clip's own blocks compute; where the CPU's
oneDNN ops cannot be used, nothing is packed and nothing changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import vlsearch.encoders.clip as clip
import vlsearch.encoders.packed as packed
from vlsearch.encoders import load_encoder

TEXTS = ["a dog", "a photo of a red bicycle leaning on a wall at night in the rain", "coffee", "word " * 100, ""]
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


def texts_through(encoder) -> np.ndarray:
    """One text at a time (a query) and all at once (a batch), stacked."""
    return np.concatenate([np.concatenate([encoder.encode_texts([t]) for t in TEXTS]), encoder.encode_texts(TEXTS)])


@needs_onednn
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_packed_text_tower_gives_the_same_vectors(precision, monkeypatch):
    monkeypatch.setattr(clip, "pack_blocks", lambda transformer: False)  # both load unpacked; one is packed here
    ours, reference = (load_encoder("tiny-random", device="cpu", precision=precision) for _ in range(2))
    assert packed.pack_blocks(ours.model.transformer)
    assert all(isinstance(b.attn, packed.PackedSelfAttention) for b in ours.model.transformer.resblocks)
    a, b = texts_through(ours), texts_through(reference)
    tolerance = 1e-5 if precision == "fp32" else 2e-3
    assert np.abs(a - b).max() < tolerance and np.all(np.sum(a * b, axis=1) > 1 - tolerance)


@needs_onednn
def test_a_packed_models_state_dict_is_open_clips(monkeypatch):
    """Saving a loaded model's weights (`vlsearch-tiny --weights FILE`) must give a checkpoint open_clip can load."""
    monkeypatch.setattr(clip, "pack_blocks", lambda transformer: False)
    plain = load_encoder("tiny-random", device="cpu", precision="fp32")
    before = {k: v.clone() for k, v in plain.model.state_dict().items()}
    assert packed.pack_blocks(plain.model.transformer)
    after = plain.model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    fresh = load_encoder("tiny-random", device="cpu", precision="fp32")
    fresh.model.load_state_dict(after)  # strict: every key, no extra


@needs_onednn
def test_bf16_on_the_cpu_loads_packed_and_fp32_stays_the_reference():
    assert load_encoder("tiny-random", device="cpu", precision="bf16").packed_text
    fp32 = load_encoder("tiny-random", device="cpu", precision="fp32")
    assert not fp32.packed_text and isinstance(fp32.model.transformer.resblocks[0].attn, nn.MultiheadAttention)


@needs_onednn
@pytest.mark.parametrize("batch_first", [True, False])
def test_packed_attention_is_multihead_attentions_self_attention(batch_first):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(64, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 9, 64) if batch_first else torch.randn(9, 3, 64)
    mask = torch.full((9, 9), float("-inf")).triu(1)
    with torch.inference_mode():
        theirs = attn(x, x, x, need_weights=False, attn_mask=mask)[0]
        ours = packed.PackedSelfAttention(attn)(x, x, x, need_weights=False, attn_mask=mask)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="self-attention"):
        packed.PackedSelfAttention(attn)(x, x.clone(), x)


def test_without_working_ops_nothing_is_packed(monkeypatch):
    encoder = load_encoder("tiny-random", device="cpu", precision="fp32")
    before = texts_through(encoder)

    def missing(*args):
        raise RuntimeError("mkldnn_reorder_linear_weight: no oneDNN on this CPU")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", missing)
    assert not packed.pack_blocks(encoder.model.transformer)
    assert isinstance(encoder.model.transformer.resblocks[0].attn, nn.MultiheadAttention)
    np.testing.assert_array_equal(texts_through(encoder), before)


def test_blocks_it_does_not_know_are_left_alone():
    assert not packed.pack_blocks(nn.Sequential(nn.Linear(4, 4)))
    encoder = load_encoder("tiny-random", device="cpu", precision="fp32")
    block = encoder.model.transformer.resblocks[0]
    block.mlp.c_fc = nn.Identity()  # not a Linear: the whole tower stays as it is
    assert not packed.pack_blocks(encoder.model.transformer)
    assert isinstance(encoder.model.transformer.resblocks[1].attn, nn.MultiheadAttention)
