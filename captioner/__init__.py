"""Image-to-text models: BLIP captions, answers and image-text matching, the offline fallback, and OCR."""

from vlsearch.captioner.base import TASKS, ImageTextModel, ModelSuite
from vlsearch.captioner.blip import BlipModel, GenerationSettings
from vlsearch.captioner.errors import ModelMissing, NotSupported, WrongTask
from vlsearch.captioner.registry import PRESETS, load_image_text_model, pull

__all__ = [
    "PRESETS",
    "TASKS",
    "BlipModel",
    "GenerationSettings",
    "ImageTextModel",
    "ModelMissing",
    "ModelSuite",
    "NotSupported",
    "WrongTask",
    "load_image_text_model",
    "pull",
]
