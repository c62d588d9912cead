"""CLIP-family embedders behind one Encoder interface, and the registry that names and loads them."""

from vlsearch.encoders.base import Encoder, pick_device
from vlsearch.encoders.errors import WeightsUnavailable
from vlsearch.encoders.registry import PRESETS, Preset, canonical_name, load_encoder, pull

__all__ = [
    "PRESETS", "Encoder", "Preset", "WeightsUnavailable", "canonical_name", "load_encoder", "pick_device", "pull",
]
