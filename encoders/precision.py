"""The number format a model computes in, per device: fp16 on a GPU (autocast), and on a CPU bfloat16 weights where
the CPU computes bf16 in hardware (AVX512_BF16 or AMX; detected, not assumed), fp32 elsewhere.

Why bf16 weights, not CPU autocast or int8: ViT-B-32 with random weights, batch 64, on a 2-core Xeon with AMX
(`python -m bench precision`, bench/results/precision.md) embeds 28.7 images/s in fp32, 36.0 under CPU autocast (it
casts every weight again on each call), 130.5 with bf16 weights (cosine to fp32 >= 0.9999) and 46.3 with int8
dynamic quantization of the Linear layers, whose torch API is deprecated in favour of torchao."""

from __future__ import annotations

import torch

from vlsearch.encoders.errors import UnknownPrecision

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware; without it, bf16 is emulated and slower than fp32."""
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported",
                                                                  "_is_amx_tile_supported"))


def resolve_precision(requested: str, device: str) -> str:
    """`requested` ("auto" or a format) made concrete for `device`; UnknownPrecision where it cannot run there."""
    if requested not in PRECISIONS:
        raise UnknownPrecision(requested, f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    cuda = device.startswith("cuda")
    if requested == "auto":
        return "fp16" if cuda else "bf16" if native_bf16() else "fp32"
    if requested == "fp16" and not cuda:
        raise UnknownPrecision(requested, "fp16 runs on a GPU only; on the CPU use bf16 (fast where the CPU has "
                               "AVX512_BF16 or AMX) or fp32")
    return requested


def weights_dtype(precision: str, device: str) -> torch.dtype:
    """The dtype a model's weights are kept in: the precision's on a CPU, float32 on a GPU (which autocasts)."""
    return torch.float32 if device.startswith("cuda") else DTYPES[precision]


def autocast(precision: str, device: str) -> torch.autocast:
    """fp16 or bf16 autocast on a GPU; nothing on the CPU, where the weights themselves carry the format."""
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16  # fp32: off, but a dtype CUDA autocast takes
    return torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype, enabled=cuda and precision != "fp32")
