"""Named image-to-text presets, resolved to loaded models in this one place (weights from cache, hub or a folder)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from vlsearch.captioner.base import ImageTextModel
from vlsearch.captioner.blip import TASK_OF_CLASS, BlipModel, GenerationSettings
from vlsearch.captioner.errors import TASK_NOUNS, TASK_VERBS, WrongTask
from vlsearch.encoders.base import pick_device
from vlsearch.encoders.errors import CheckpointUnusable, UnknownModel, WeightsNotHere, WeightsUnavailable
from vlsearch.encoders.precision import DTYPES, resolve_precision
from vlsearch.encoders.weights import file_digest, hub_reachable

log = logging.getLogger(__name__)

# The files a BLIP checkpoint needs. Safetensors where the repository has them; a pytorch_model.bin only where it
# has none (transformers loads those with torch.load(weights_only=True), which runs no pickled code).
WEIGHT_PATTERNS = ["*.json", "*.txt", "*.safetensors"]
PICKLE_WEIGHTS = ["pytorch_model.bin"]


@dataclass(frozen=True)
class CaptionPreset:
    name: str
    tasks: tuple[str, ...]
    repo: str | None  # Hugging Face repository of the weights
    description: str


PRESETS: dict[str, CaptionPreset] = {
    p.name: p
    for p in (
        CaptionPreset("blip-base", ("caption",), "Salesforce/blip-image-captioning-base",
                      "BLIP base captioning (COCO): the default caption model where its weights are present"),
        CaptionPreset("blip-large", ("caption",), "Salesforce/blip-image-captioning-large",
                      "BLIP large captioning: better captions, about 3x slower"),
        CaptionPreset("blip-vqa-base", ("answer",), "Salesforce/blip-vqa-base",
                      "BLIP base visual question answering: questions about an image"),
        CaptionPreset("blip-itm-base", ("match",), "Salesforce/blip-itm-base-coco",
                      "BLIP base image-text matching: reranking, and questions over a collection"),
        CaptionPreset("offline", ("caption", "answer"), None,
                      "FALLBACK, not BLIP: names the ImageNet objects it sees and the text OCR reads; answers only "
                      "questions about text"),
        CaptionPreset("tiny-random", ("caption", "answer", "match"), None,
                      "tiny BLIP models with random weights, for tests only: their words mean nothing"),
    )
}

# What `auto` tries for each task, in order; the last resort is what runs with no weights at all.
AUTO = {"caption": ("blip-base", "offline"), "answer": ("blip-vqa-base", "offline"), "match": ("blip-itm-base",)}
FOLDER_PREFIX = "blip:"  # a model loaded from a checkpoint folder is named blip:/PATH#HASH


def load_image_text_model(
    spec: str,
    task: str,
    *,
    model_dir: Path | None = None,
    device: str = "auto",
    settings: GenerationSettings | None = None,
    allow_download: bool = True,
    precision: str = "auto",
) -> ImageTextModel:
    """Load the model `spec` names for `task` (caption, answer or match).

    spec: `auto`, a preset (`vlsearch models list`), or a local folder holding a transformers BLIP checkpoint
    (config.json, weights and processor files). `precision`: what a BLIP model computes in
    (encoders/precision.py); the offline captioner computes in fp32.
    """
    device = pick_device(device)
    resolve_precision(precision, device)  # an impossible one is an error before anything loads
    if spec == "auto":
        for candidate in AUTO[task]:
            try:
                return load_image_text_model(candidate, task, model_dir=model_dir, device=device, settings=settings,
                                             allow_download=allow_download, precision=precision)
            except WeightsUnavailable as exc:
                last = exc
                if candidate != AUTO[task][-1]:
                    log.warning("%s Falling back to `%s`.", exc, AUTO[task][-1])
        raise last
    preset = PRESETS.get(spec)
    if preset is not None and task not in preset.tasks:
        can = [p.name for p in PRESETS.values() if task in p.tasks and p.repo]
        raise WrongTask(spec, task, f"{spec} cannot {TASK_VERBS[task]}; use one of: {', '.join(can)}",
                        choices=tuple(can))
    if spec == "offline":
        from vlsearch.captioner.offline import OfflineCaptioner

        return OfflineCaptioner(device, cache_dir=model_dir)
    if spec == "tiny-random":
        from vlsearch.captioner.tiny import tiny_blip

        model, processor = tiny_blip(task)
        return BlipModel("tiny-random", model, processor, device, settings, precision)
    if preset is not None:
        folder = resolve_blip_weights(preset.repo or "", model_dir, allow_download)
        return _from_folder(preset.name, folder, task, device, settings, precision)
    if spec.startswith(FOLDER_PREFIX) and "#" in spec:  # a folder model as a library recorded it
        folder = Path(spec.removeprefix(FOLDER_PREFIX).rsplit("#", 1)[0])
        if not folder.is_dir():
            raise WeightsUnavailable(f"the checkpoint folder {folder} is gone (or not reachable from here)")
        return _from_folder(folder_name(folder), folder, task, device, settings, precision)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return _from_folder(folder_name(folder), folder, task, device, settings, precision)
    raise UnknownModel(spec, f"unknown model {spec!r} for {TASK_NOUNS[task]}: use a preset ({', '.join(PRESETS)}) "
                       "or a folder holding a BLIP checkpoint", task=task, choices=tuple(PRESETS))


def resolve_blip_weights(repo: str, model_dir: Path | None, allow_download: bool) -> Path:
    """The local folder of a hub checkpoint: from the cache, else downloaded when the hub answers."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = str(model_dir) if model_dir else None
    try:
        folder = Path(snapshot_download(repo, cache_dir=cache_dir, allow_patterns=WEIGHT_PATTERNS + PICKLE_WEIGHTS,
                                        local_files_only=True))
        if _has_weights(folder):
            return folder
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if allow_download and hub_reachable():
        log.info("downloading %s into %s", repo, cache_dir or "the Hugging Face cache")
        folder = Path(snapshot_download(repo, cache_dir=cache_dir, allow_patterns=WEIGHT_PATTERNS))
        if not _has_weights(folder):
            folder = Path(snapshot_download(repo, cache_dir=cache_dir, allow_patterns=WEIGHT_PATTERNS + PICKLE_WEIGHTS))
        return folder
    name = next((p.name for p in PRESETS.values() if p.repo == repo), repo)
    raise WeightsNotHere(name, str(model_dir or "~/.cache/huggingface/hub"), repo=repo)


def folder_name(folder: Path) -> str:
    """blip:/ABSOLUTE/FOLDER#HASH, the hash over the weight files. Captions are keyed by model name: the path lets
    later runs load the model again by that name, the hash keeps a retrained checkpoint in the same folder apart."""
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob(PICKLE_WEIGHTS[0]))
    digest = hashlib.sha256("".join(file_digest(w) for w in weights).encode()).hexdigest()
    return f"{FOLDER_PREFIX}{folder.resolve()}#{digest[:12]}"


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or (folder / PICKLE_WEIGHTS[0]).is_file()


def _from_folder(name: str, folder: Path, task: str, device: str, settings: GenerationSettings | None,
                 precision: str = "auto") -> BlipModel:
    import transformers
    from transformers.utils import logging as hf_logging

    config = folder / "config.json"
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError) as exc:
        raise CheckpointUnusable(folder, f"not a transformers checkpoint folder (cannot read {config}: {exc})") \
            from None
    cls_name = next((a for a in architectures if a in TASK_OF_CLASS), None)
    if cls_name is None:
        raise ValueError(f"{folder} holds {', '.join(architectures) or 'an unknown model'}, not a BLIP model "
                         f"({', '.join(TASK_OF_CLASS)})")
    if TASK_OF_CLASS[cls_name] != task:
        other = TASK_OF_CLASS[cls_name]
        raise WrongTask(str(folder), task, f"{folder} is a {cls_name} checkpoint, which can {TASK_VERBS[other]}, not "
                        f"{TASK_VERBS[task]}", fits=other)
    hf_logging.disable_progress_bar()
    dtype = DTYPES[resolve_precision(precision, device)]
    try:
        model = getattr(transformers, cls_name).from_pretrained(folder, dtype=dtype)
        processor = transformers.BlipProcessor.from_pretrained(folder)
    except Exception as exc:  # a truncated or corrupt file raises anything from OSError to SafetensorError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointUnusable(folder, f"cannot load {cls_name} ({type(exc).__name__}: {reason}); download it "
                                 "again or choose another model") from None
    return BlipModel(name, model, processor, device, settings, precision)


def pull(spec: str, model_dir: Path | None) -> Path:
    """Download a BLIP preset's weights into `model_dir` (or the default cache)."""
    preset = PRESETS[spec]
    if not preset.repo:
        raise ValueError(f"{spec!r} needs no download: it comes with the Python packages")
    return resolve_blip_weights(preset.repo, model_dir, allow_download=True)
