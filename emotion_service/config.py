"""Service settings (environment variables / flags) and the models config file.

Every setting is an environment variable and also a flag of ``start_api_server.py``; both come
from the one table :data:`SETTINGS` so they cannot drift. Invalid values raise
:class:`~emotion_service.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .models.spec import ModelSpec

DEFAULT_MODELS_CONFIG = "models.toml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEVICES = ("auto", "cpu", "cuda")
LANGS = ("zh", "en")


@dataclass(frozen=True)
class Setting:
    """One configurable value: its environment variable, type, default and help."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    help: str


def _number(text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"must be a {'whole number' if kind is int else 'number'}") from None


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _port(text: str) -> int:
    value = _number(text, int)
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number between 1 and 65535")
    return value


def _choice(*allowed: str, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _device(text: str) -> str:
    value = text.strip().lower()
    if value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ValueError("must be auto, cpu, cuda or cuda:N")


def _optional_path(text: str) -> str | None:
    return text.strip() or None


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Defaults are the embedded ones."""

    host: str = "127.0.0.1"
    port: int = 5000
    model_preset: str = "default"
    models_dir: str | None = None
    models_config: str | None = None
    device: str = "auto"
    log_level: str = "INFO"
    threads: int = 4
    max_upload_mb: float = 25.0
    max_request_mb: float = 64.0
    min_audio_seconds: float = 0.5
    max_audio_seconds: float = 600.0
    max_batch_segments: int = 20
    default_lang: str = "zh"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win.

        Raises:
            ConfigError: A variable has an invalid value; the message names it.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            if raw is None or raw == "":
                continue
            values[setting.attr] = parse_setting(setting, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check values that depend on each other."""
        if self.min_audio_seconds >= self.max_audio_seconds:
            raise ConfigError(
                "MIN_AUDIO_SECONDS must be smaller than MAX_AUDIO_SECONDS "
                f"(got {self.min_audio_seconds} and {self.max_audio_seconds})."
            )
        if self.max_upload_mb > self.max_request_mb:
            raise ConfigError(
                f"MAX_UPLOAD_MB ({self.max_upload_mb}) must not exceed MAX_REQUEST_MB "
                f"({self.max_request_mb}): raise MAX_REQUEST_MB or lower MAX_UPLOAD_MB."
            )

    def with_overrides(self, **overrides: Any) -> Settings:
        settings = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        settings.validate()
        return settings


SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", "host", str, "Address to listen on (0.0.0.0 exposes the service)."),
    Setting("PORT", "port", _port, "Port to listen on."),
    Setting("MODEL_PRESET", "model_preset", str, "Preset of the models config to load: default (bundled model, offline) or full (ExHuBERT + HuBERT-Large + Wav2Vec2-XLSR)."),
    Setting("MODELS_DIR", "models_dir", _optional_path, "Directory of pre-downloaded models (python -m emotion_service.download) and the hub cache."),
    Setting("MODELS_CONFIG", "models_config", _optional_path, "Path of a models.toml of your own (presets, weights, extra models)."),
    Setting("DEVICE", "device", _device, "auto (CUDA when available), cpu, cuda or cuda:N."),
    Setting("LOG_LEVEL", "log_level", _choice(*LOG_LEVELS, upper=True), "DEBUG, INFO, WARNING or ERROR."),
    Setting("THREADS", "threads", _positive_int, "Request threads of the server process (one copy of the models is shared)."),
    Setting("MAX_UPLOAD_MB", "max_upload_mb", _positive_float, "Largest audio file (or decoded base64 segment) accepted, in MB."),
    Setting("MAX_REQUEST_MB", "max_request_mb", _positive_float, "Largest request body accepted, in MB (base64 adds a third)."),
    Setting("MIN_AUDIO_SECONDS", "min_audio_seconds", _positive_float, "Shortest clip accepted, in seconds."),
    Setting("MAX_AUDIO_SECONDS", "max_audio_seconds", _positive_float, "Longest clip accepted, in seconds."),
    Setting("MAX_BATCH_SEGMENTS", "max_batch_segments", _positive_int, "Most segments in one /batch_analyze request."),
    Setting("DEFAULT_LANG", "default_lang", _choice(*LANGS), "Language of messages and advice when a request gives no lang: zh or en."),
)


def parse_setting(setting: Setting, raw: str) -> Any:
    """Parse one raw value, raising ConfigError that names the variable."""
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{setting.env}={raw!r} is invalid: {exc}.") from None


# -- models config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelsConfig:
    """The models config file: model entries and the presets that combine them."""

    models: dict[str, ModelSpec]
    presets: dict[str, dict[str, float]]  # preset -> {model name: weight}
    path: str

    def preset(self, name: str) -> dict[str, float]:
        """Return a preset's model weights, or raise ConfigError listing the presets."""
        if name not in self.presets:
            raise ConfigError(
                f"MODEL_PRESET={name!r} is not defined in {self.path}; "
                f"choose one of {', '.join(sorted(self.presets))} or add it to that file."
            )
        return self.presets[name]


_SPEC_FIELDS = {f.name for f in fields(ModelSpec)}


def load_models_config(path: str | os.PathLike[str] | None = None) -> ModelsConfig:
    """Read a models config file (TOML); the packaged ``models.toml`` when ``path`` is None.

    Raises:
        ConfigError: The file is missing or malformed; the message says where.
    """
    if path is None:
        text = resources.files("emotion_service.resources").joinpath(DEFAULT_MODELS_CONFIG).read_text("utf-8")
        where = f"the packaged {DEFAULT_MODELS_CONFIG}"
    else:
        where = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"MODELS_CONFIG={where!r} cannot be read: {exc.strerror}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The models config {where} is not valid TOML: {exc}.") from None

    models: dict[str, ModelSpec] = {}
    for name, entry in data.get("models", {}).items():
        unknown = set(entry) - _SPEC_FIELDS
        if unknown:
            raise ConfigError(
                f"[models.{name}] in {where} has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(_SPEC_FIELDS - {'name'})}."
            )
        for required in ("backend", "source"):
            if required not in entry:
                raise ConfigError(f"[models.{name}] in {where} needs a {required!r} key.")
        entry = dict(entry)
        if "labels" in entry:
            entry["labels"] = tuple(entry["labels"])
        entry.setdefault("display_name", name)
        models[name] = ModelSpec(name=name, **entry)

    presets: dict[str, dict[str, float]] = {}
    for preset, members in data.get("presets", {}).items():
        weights: dict[str, float] = {}
        for name, weight in members.items():
            if name not in models:
                raise ConfigError(
                    f"Preset {preset!r} in {where} names model {name!r}, which has no [models.{name}] entry."
                )
            if not isinstance(weight, int | float) or weight <= 0:
                raise ConfigError(f"Preset {preset!r} in {where}: the weight of {name!r} must be a positive number.")
            weights[name] = float(weight)
        if not weights:
            raise ConfigError(f"Preset {preset!r} in {where} has no models.")
        presets[preset] = weights
    return ModelsConfig(models=models, presets=presets, path=where)
