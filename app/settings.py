"""The one settings object: ``VISLEX_*`` environment variables, an optional TOML file, defaults.

Precedence (highest first): explicit keyword arguments, environment variables,
the TOML file named by ``VISLEX_CONFIG``, defaults. Validated once at startup;
:func:`load_settings` turns a validation failure into :class:`SettingsError`
whose message names every bad field by its environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "VISLEX_"


class SettingsError(ValueError):
    """Configuration is invalid; the message names each bad field."""


class Settings(BaseSettings):
    """Everything configurable in vislex (see the README's configuration table)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # --- process and HTTP ---
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path(".vislex")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    max_in_flight: int = Field(256, ge=1, description="requests served at once before 429")
    # Issue 19: /healthz and /readyz on their own listener thread, so a probe never waits behind the API's
    # event loop under overload. Unset: the API port + 1 (off when that is past 65535); 0: off.
    probe_port: int | None = Field(None, ge=0, le=65535, description="port of the probe listener (/healthz, "
                                   "/readyz on its own thread, same host as the API); unset = port + 1, 0 = off")
    max_batch_words: int = Field(2000, ge=1)
    max_word_length: int = Field(100, ge=1)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, description="largest multipart request body (all its files)")
    # --- issue 19 part A: request bounds, untrusted uploads, authentication ---
    max_json_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="largest non-multipart request body")
    max_decompressed_bytes: int = Field(256 * 1024 * 1024, ge=1, description="bytes an uploaded vectors file "
                                        "(.vec.gz, .npy vocabulary) may expand to")
    upload_parse_memory_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=64 * 1024 * 1024, description="memory the "
                                           "child process parsing an uploaded vectors file may allocate")
    upload_parse_timeout_s: float = Field(120.0, gt=0, description="seconds an uploaded vectors file may take to parse")
    api_keys: list[str] | str | None = Field(None, repr=False, description="keys for writes: a JSON list, "
                                             "comma-separated keys, or the absolute path of a file with one key per line")
    auth_reads: bool = Field(False, description="require a key for reads too (not /healthz, /readyz)")

    # --- Redis and jobs ---
    redis_url: str | None = Field(None, description="external Redis; unset = embedded server under data_dir")
    redis_embedded: bool = Field(False, description="set by `vislex serve`: redis_url is the embedded server it started")
    # Short, so a paused or unreachable Redis answers requests with a quick 503, not a hang.
    redis_timeout_s: float = Field(1.0, gt=0, le=60, description="socket timeout of the API's Redis clients")
    worker_concurrency: int = Field(1, ge=1)
    worker_queues: str = "light,heavy"
    job_time_limit_s: int = Field(3600, ge=1)
    job_heartbeat_s: float = Field(5.0, gt=0)

    # --- word spaces and translation serving ---
    spaces: dict[str, str] = Field(default_factory=dict, description="language -> vectors file")
    space_path_roots: list[Path] = Field(
        default_factory=list, description="extra directories POST /v1/spaces may register server-side files from "
        "(always allowed: data_dir and the directories of the configured spaces)")
    mappings: dict[str, str] = Field(default_factory=dict, description="'src-tgt' -> Mapping file")
    encoder_languages: list[str] = Field(
        default_factory=lambda: ["en", "fr", "de", "es", "it", "ru"],
        description="encoder-derived spaces built at startup (/readyz is 200 once they are served)")
    encoder_languages_lazy: list[str] = Field(
        default_factory=lambda: ["pt", "nl", "pl", "tr", "ar", "ja", "ko", "zh"],
        description="encoder-derived spaces built after startup, in the background (a request for one moves it "
        "to the front; until it is built it answers 503 'space_loading')")
    text_encoder: str = "use-multilingual"
    encoder_vocab_size: int = Field(20000, ge=10)
    vocab_leak_margin: float | None = Field(
        0.75, gt=0, description="language-pure vocabularies: a word stays in language L only when it is at least "
        "10^x times more frequent in L than text leaking in from another reference language explains "
        "(services/serving/vocabulary.py; null: keep every word of the frequency list)")
    vocab_reference_languages: list[str] = Field(
        default_factory=lambda: ["en"], description="languages a served vocabulary is compared with, besides "
        "the served encoder languages")
    max_vocab: int | None = Field(None, ge=1)
    normalize: str = "unit,center,unit"
    index_type: Literal["flat", "hnsw", "ivf"] = "flat"
    storage_dtype: Literal["float32", "float16"] = "float32"
    csls_knn: int = Field(10, ge=1, le=100, description="K of CSLS (neighbours in r_S) for every pair except "
                          "those between encoder-derived spaces (encoder_csls_knn)")
    # 5, not MUSE's 10: chosen by benchmarks/encoder_spaces.py --dev's fixed rule (mean dev P@1 CSLS over six
    # pairs 65.48 -> 66.22, mean dev echo 3.11 -> 2.92 %).
    encoder_csls_knn: int = Field(5, ge=1, le=100, description="K of CSLS between encoder-derived spaces of one "
                                  "encoder (the embedded default spaces); csls_knn applies to every other pair")
    frequency_prior: float = Field(
        0.1, ge=0, le=10, description="CSLS answers between encoder-derived spaces: weight of the one-sided "
        "frequency prior (a target much rarer than its source is penalised; services/serving/rank_prior.py); 0 = off")
    cache_enabled: bool = True
    cache_ttl_s: int = Field(86400, ge=1)
    table_k: int = Field(10, ge=0, le=100, description="precomputed top-k translation tables per pair and "
                         "retrieval (lookups with k <= table_k skip the search); 0 turns them off")
    table_build: Literal["on_demand", "eager"] = Field(
        "on_demand", description="build a pair's tables when it is first queried, or for every pair at startup")

    # --- CLIP (visual pivot) ---
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "laion2b_s34b_b79k"
    clip_checkpoint: Path | None = None
    clip_models: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-language CLIP overrides")
    clip_device: str = "auto"
    images_dir: Path | None = None
    mobilenet_dir: Path | None = Field(
        None, description="folder of the pretrained MobileNet .tflite files the compact CLIPs' image towers load "
        "(models/image_towers.py reads this same variable; default: ../shared/data/models/mobilenet beside the checkout)")
    # Issue 17: with no CLIP to load, train a compact one from the shared photos (services/clip/bootstrap.py).
    clip_bootstrap: Literal["auto", "off"] = Field(
        "auto", description="when no default CLIP loads (no clip_checkpoint, open_clip weights unavailable) and "
        "the shared Flickr8k photos, captions and MobileNets exist, train a compact CLIP as a clip-training job and "
        "serve it when done (auto), or never (off)")
    shared_data_dir: Path | None = Field(
        None, description="folder of the shared data the CLIP bootstrap trains from (images/flickr8k, "
        "captions/flickr8k/captions.tsv, models/mobilenet); default: ../shared/data beside the checkout")
    clip_templates: dict[str, list[str]] | str | None = Field(
        None, description="prompt ensembles {lang: [templates]} overriding the shipped ones for those languages: "
        "inline JSON or the path of a JSON file; each template holds exactly one '{}'")

    # --- uCLIP retrieval ---
    uclip_checkpoint: Path | None = None

    # --- sentence translation by retrieval (Globetrotter, issue 16) ---
    sentence_model: str | None = Field(
        None, description="sentence model at startup: an encoder name or a Globetrotter checkpoint (path, or name "
        "under <data_dir>/sentences/models); unset = the last activated one, else text_encoder")
    sentence_max_batch: int = Field(256, ge=1, description="sentences per translate request; more get 413")
    sentence_max_add: int = Field(10000, ge=1, description="sentences per add request; more get 413")
    sentence_max_chars: int = Field(2000, ge=1, description="characters per sentence; longer get 413")
    sentence_storage_dtype: Literal["float32", "float16"] = Field(
        "float16", description="storage of sentence indexes: float16 (default) halves memory and the scan, which is "
        "bound by memory bandwidth (one sentence vs 100k: p50 13.8 ms vs 20.8 ms at float32); vectors are kept "
        "float32 on disk, so switching rebuilds nothing")

    # --- vision feature (issue 6): visual-word filter reference ---
    clip_reference_words: int = Field(
        1000, ge=0, description="frequent words per language whose median best-image similarity is the visual-word cut "
        "of /v1/fingerprints (0 = no verdict)")
    # --- end vision feature ---

    @field_validator("spaces", "mappings")
    @classmethod
    def _non_empty_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for key, path in value.items():
            if not key or not str(path):
                raise ValueError(f"entry {key!r} needs a non-empty name and path")
        return value

    @field_validator("mappings")
    @classmethod
    def _pair_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            parts = key.split("-")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"mapping key {key!r} must look like 'src-tgt'")
        return value

    @field_validator("mobilenet_dir")
    @classmethod
    def _mobilenet_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory (it should hold the MobileNet .tflite files)")
        return value

    @field_validator("shared_data_dir")
    @classmethod
    def _shared_data_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory (it should hold images/flickr8k, captions/flickr8k, "
                             "models/mobilenet)")
        return value

    @field_validator("clip_templates")
    @classmethod
    def _clip_templates(cls, value: dict[str, list[str]] | str | None) -> dict[str, list[str]] | None:
        from services.vision.config import parse_templates

        return parse_templates(value)

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: list[str] | str | None) -> list[str]:
        from app.auth import parse_api_keys

        return parse_api_keys(value)

    @model_validator(mode="after")
    def _probe_port(self) -> "Settings":
        if self.probe_port is None:
            self.probe_port = self.port + 1 if self.port < 65535 else 0
        elif self.probe_port == self.port:
            raise ValueError(f"VISLEX_PROBE_PORT {self.probe_port} is the API port; choose another, or 0 for off")
        return self

    @model_validator(mode="after")
    def _auth_reads_needs_keys(self) -> "Settings":
        if self.auth_reads and not self.api_keys:
            raise ValueError("VISLEX_AUTH_READS=true needs VISLEX_API_KEYS (no key could ever be accepted)")
        return self

    @field_validator("normalize")
    @classmethod
    def _known_steps(cls, value: str) -> str:
        steps = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in steps if s not in ("unit", "center", "none")]
        if bad:
            raise ValueError(f"unknown normalisation step(s) {bad}; known: unit, center")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


def load_settings(**overrides: Any) -> Settings:
    """Build and validate settings; raise :class:`SettingsError` naming each bad field."""
    config = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if config and not Path(config).is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG: file not found: {config}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            top = str(err["loc"][0]) if err["loc"] else field
            lines.append(f"{ENV_PREFIX}{top.upper()} ({field}): {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None
    except ValueError as exc:  # e.g. a malformed TOML file or JSON in an env var
        raise SettingsError(f"invalid configuration: {exc}") from None
