"""Settings: the only module that reads environment variables and config files.

Precedence, highest first: command-line options, `VLSEARCH_*` environment variables, the TOML file
(`--config FILE`, else `$VLSEARCH_CONFIG`, else `~/.config/vlsearch/config.toml` when it exists), defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from platformdirs import user_cache_dir, user_config_dir, user_data_dir
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PLATFORM_LIBRARY = Path(user_data_dir("vlsearch")) / "library"
PLATFORM_MODEL_DIR = Path(user_cache_dir("vlsearch")) / "models"
PLATFORM_CONFIG = Path(user_config_dir("vlsearch")) / "config.toml"


def default_library() -> Path:
    return Path(os.environ.get("VLSEARCH_LIBRARY") or PLATFORM_LIBRARY)


def default_model_dir() -> Path:
    """Model weights and caches: copy this folder to an air-gapped machine to bring CLIP weights along."""
    return Path(os.environ.get("VLSEARCH_MODEL_DIR") or PLATFORM_MODEL_DIR)


def config_file(explicit: Path | None = None) -> Path | None:
    """The TOML file settings come from: the one named, else $VLSEARCH_CONFIG, else the platform one if present."""
    if explicit is not None:
        return explicit
    if os.environ.get("VLSEARCH_CONFIG"):
        return Path(os.environ["VLSEARCH_CONFIG"])
    return PLATFORM_CONFIG if PLATFORM_CONFIG.is_file() else None


def _split(value: Any) -> Any:
    """A list from the environment is comma-separated ("k1,k2"); from TOML it is already a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """How `vlsearch serve` runs. Every field is also `VLSEARCH_<NAME>` in the environment and `name = ...` in the
    TOML file."""

    model_config = SettingsConfigDict(env_prefix="VLSEARCH_", extra="forbid", validate_default=True)

    library: Path = Field(default_factory=default_library, description="The library folder to serve.")
    model_dir: Path = Field(default_factory=default_model_dir, description="Where model weights are looked for.")
    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 for every interface.")
    port: int = Field(8000, ge=0, le=65535)
    device: str = Field("auto", description="auto, cpu or cuda.")
    precision: str = Field("auto", description="What the models compute in: auto (fp16 on a GPU; bf16 on a CPU with "
                           "AVX512_BF16 or AMX, which runs CLIP and BLIP 3-5x faster; else fp32), fp32, bf16 or fp16.")

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Keys accepted as `Authorization: Bearer KEY` (comma-separated in the "
        "environment). Indexing and deleting need one; without any configured they are refused.")
    auth_reads: bool = Field(False, description="Require a key for every endpoint, reads included.")
    index_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders on the server under which POST /index may index (comma-"
        "separated in the environment). Empty: POST /index is refused.")
    cors_origins: CommaList = Field(
        default_factory=list, description="Origins allowed to call the API from a browser (CORS); empty: off.")

    max_upload_bytes: int = Field(20_000_000, ge=1, description="Largest image upload.")
    max_pixels: int = Field(50_000_000, ge=1, description="Largest decoded image (width x height) an upload may be.")
    max_body_bytes: int = Field(30_000_000, ge=1, description="Largest request body (a base64 image in JSON is "
                                "a third larger than the file).")
    max_batch: int = Field(32, ge=1, le=256, description="Most images in one batch caption request.")

    model: str | None = Field(None, description="Embedding model for a new library; default: the library's, "
                              "else auto.")
    index_workers: int = Field(0, ge=0, le=64, description="Decoding processes for index jobs (0: in the job's "
                               "thread).")
    caption_model: str | None = Field(None, description="Caption model; default: the library's, else auto.")
    vqa_model: str = Field("auto", description="Model for POST /vqa and /ask.")
    itm_model: str = Field("auto", description="Image-text matching model for rerank and /ask.")
    captions: bool = Field(True, description="Load a caption model (POST /caption; captions for indexed images).")
    ocr: bool = Field(True, description="Read text in images indexed through POST /index.")

    batch_wait_ms: float = Field(2.0, ge=0, le=100, description="How long a text query waits for others to share "
                                 "one encoder call; 0 turns micro-batching off.")
    batch_max: int = Field(64, ge=1, le=1024, description="Most text queries in one encoder call.")
    index_lag_s: float = Field(10.0, ge=0, description="While another process indexes the library, the server "
                               "refreshes its vector index at most this often.")

    @field_validator("api_keys", "index_roots", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("index_roots")
    @classmethod
    def _absolute(cls, roots: list[Path]) -> list[Path]:
        try:
            return [root.expanduser().resolve() for root in roots]
        except RuntimeError as exc:  # ~someone who has no home here
            raise ValueError(f"cannot expand ~ in a path ({exc}); give the folder's absolute path") from None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


class SettingsError(ValueError):
    """The settings cannot be read; the message names the file or variable to fix."""


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the sources above; `overrides` (command-line options) win, None values are ignored."""
    path = config_file(config)
    if path is not None and not path.is_file():
        raise SettingsError(f"config file {path}: no such file")

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return FromFile(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        where = f" (config file {path}, environment VLSEARCH_*)" if path else " (environment VLSEARCH_*)"
        # Each problem by field, without the value given: a mistyped setting may hold an API key.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
        raise SettingsError(f"invalid settings{where}: {problems}") from None
    except ValueError as exc:  # TOML syntax errors, which name the line and not the value
        raise SettingsError(f"config file {path}: {exc}") from None


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """VLSEARCH_* variables that name no setting (a typo such as VLSEARCH_API_KEY for VLSEARCH_API_KEYS is
    otherwise silently ignored, and the server comes up without the keys the operator meant to set)."""
    known = {f"VLSEARCH_{name.upper()}" for name in Settings.model_fields} | {"VLSEARCH_CONFIG"}
    environ = os.environ if environ is None else environ
    return sorted(name for name in environ if name.upper().startswith("VLSEARCH_") and name.upper() not in known)
