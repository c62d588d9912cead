"""Transformer blocks on the CPU with their Linear weights packed once into oneDNN's layout, instead of torch
re-laying each weight out on every call: a short text query is a few rows against 38M weights, so that per-call work
is most of its time. 48 bf16 Linears of ViT-B-32's text tower (8 rows) took 7.1 ms unpacked, 3.9 ms packed (2-core
Xeon VM, AMX). The ops are the ones torch.compile's CPU backend packs with; where they are missing or disagree with
F.linear on a probe, nothing is packed."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
ROWS_HINT = 16  # oneDNN picks the packed layout for about this many rows; any number of rows works


def pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), ROWS_HINT)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out.shape[-1])


class PackedLinear(nn.Module):
    """nn.Linear with a packed copy of its weight. Keeps `weight` and `bias` as they were, so open_clip reads the
    weight's dtype and a state dict saved from the model loads into an unpacked one (the packed copy is not in it)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = pack(linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.packed, self.bias)


class PackedSelfAttention(nn.Module):
    """nn.MultiheadAttention's self-attention forward (what open_clip's blocks call) on packed projections; its
    parameters keep MultiheadAttention's names, so state dicts are the same."""

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        self.heads, self.batch_first = attn.num_heads, attn.batch_first
        self.in_proj_weight, self.in_proj_bias = attn.in_proj_weight, attn.in_proj_bias
        self.in_packed = pack(attn.in_proj_weight)
        self.out_proj = PackedLinear(attn.out_proj)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if not (q is k is v) or need_weights:
            raise ValueError("packed attention computes self-attention without weights only")
        x = q if self.batch_first else q.transpose(0, 1)
        n, length, width = x.shape
        qkv = packed_linear(x, self.in_packed, self.in_proj_bias)
        qkv = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, width))
        return (out if self.batch_first else out.transpose(0, 1)), None


def pack_blocks(transformer: nn.Module) -> bool:
    """Pack the attention and MLP Linears of every block of an open_clip Transformer in place, where the CPU's
    oneDNN ops exist and agree with F.linear; the blocks are left as they were otherwise. Whether it packed."""
    blocks = getattr(transformer, "resblocks", None)
    if not blocks or not all(_packable(b) for b in blocks) or not _ops_work(blocks[0].mlp.c_fc):
        return False
    for block in blocks:
        block.attn = PackedSelfAttention(block.attn)
        block.mlp.c_fc, block.mlp.c_proj = PackedLinear(block.mlp.c_fc), PackedLinear(block.mlp.c_proj)
    return True


def _packable(block: nn.Module) -> bool:
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    linears = all(isinstance(getattr(mlp, name, None), nn.Linear) for name in ("c_fc", "c_proj"))
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.in_proj_bias is not None
            and not attn.add_zero_attn and attn.bias_k is None and attn.dropout == 0.0
            and not hasattr(block, "ln_1_kv") and linears and attn.in_proj_weight.device.type == "cpu")


def _ops_work(linear: nn.Linear) -> bool:
    """A packed copy of `linear` gives F.linear's rows for a probe; any failure means: do not pack."""
    try:
        probe = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(0)).to(linear.weight.dtype)
        with torch.inference_mode():
            expected = F.linear(probe, linear.weight, linear.bias).float()
            same = torch.allclose(PackedLinear(linear)(probe).float(), expected, rtol=2e-2, atol=2e-2)
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        log.info("not packing Linear weights: %s", exc)
        return False
    return bool(same)

