"""Where things live when the user does not say: the only module that reads environment variables."""

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

PLATFORM_LIBRARY = Path(user_data_dir("vlsearch")) / "library"
PLATFORM_MODEL_DIR = Path(user_cache_dir("vlsearch")) / "models"


def default_library() -> Path:
    return Path(os.environ.get("VLSEARCH_LIBRARY") or PLATFORM_LIBRARY)


def default_model_dir() -> Path:
    """Model weights and caches: copy this folder to an air-gapped machine to bring CLIP weights along."""
    return Path(os.environ.get("VLSEARCH_MODEL_DIR") or PLATFORM_MODEL_DIR)
