"""Service settings (environment variables / flags) and the models config file.

Every setting is an environment variable and also a flag of ``start_api_server.py``; both come
from the one table :data:`SETTINGS` so they cannot drift. Invalid values raise
:class:`~emotion_service.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from .errors import ConfigError

# Every model and the decoder work at this rate: decoding resamples to it, models refuse others.
SAMPLING_RATE = 16_000

DEFAULT_MODELS_CONFIG = "models.toml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEVICES = ("auto", "cpu", "cuda")
LANGS = ("zh", "en")
AUTH_MODES = ("auto", "on", "off")
# Endpoints that AUTH_EXEMPT may name (Flask endpoint names without the blueprint).
EXEMPTABLE_ENDPOINTS = ("health", "metrics", "index", "docs", "console")
REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://", "redis+sentinel://", "redis+cluster://")


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the ``[models.<name>]`` table of the models config file.

    Attributes:
        name: Registry key, e.g. ``"hubert_large"``.
        display_name: Shown in results, e.g. ``"HuBERT-Large"``.
        backend: ``"transformers"`` (a Hugging Face audio-classification model), ``"encoder"`` (the
            shipped Whisper encoder under a trained head) or ``"bundled"`` (the small CNN).
        source: Hub id (``"superb/hubert-large-superb-er"``) or a local directory/file; for
            ``encoder``, the head's folder (relative names are under the shipped resources).
        revision: Hub revision (commit) to pin; None for the default branch.
        licence: Licence of the weights, shown in /health and the README.
        commercial_use: False for non-commercial weights (CC BY-NC...).
        trust_remote_code: Run the model's own modelling code (ExHuBERT needs it).
        feature_extractor: Hub id or directory to take the feature extractor from when the
            model repository has none of its own (ExHuBERT borrows facebook/hubert-base-ls960's).
        labels: Class names in index order, overriding ``config.id2label`` when a model only
            has generic names (``LABEL_0``...).
        window_seconds: Longer audio is analysed in windows of this length (None: whole clip).
        encoder: For ``encoder`` models, the encoder's folder (``config.json``,
            ``model.safetensors``); default the shipped Whisper-base encoder.
        quantize: ``none``, ``int8`` or ``bf16`` (encoder heads): how this model runs on CPU
            under ``QUANTIZE=auto``.
    """

    name: str
    display_name: str
    backend: str
    source: str
    revision: str | None = None
    licence: str = "unknown"
    commercial_use: bool = True
    trust_remote_code: bool = False
    feature_extractor: str | None = None
    labels: tuple[str, ...] | None = None
    window_seconds: float | None = None
    encoder: str | None = None
    quantize: str | None = None


@dataclass(frozen=True)
class Setting:
    """One configurable value: its environment variable, type, default and help."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    help: str
    empty: bool = False  # an empty value means something (e.g. LOG_FILE= disables the file)
    secret: bool = False  # never echo the value (API keys, URLs with passwords)


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


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError("must be on or off")


def _optional_path(text: str) -> str | None:
    return text.strip() or None


def _non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise ValueError("must be 0 or a positive number")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise ValueError("must be 0 or a positive whole number")
    return value


def _api_keys(text: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in text.split(",") if key.strip())
    if not keys:
        raise ValueError("must be one or more comma-separated keys")
    check_api_keys(keys)
    return keys


def check_api_keys(keys: tuple[str, ...]) -> None:
    """Reject keys that cannot travel in an HTTP header (never echoing the key itself)."""
    for number, key in enumerate(keys, 1):
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise ValueError(f"key {number} must be printable ASCII without spaces (it goes in the X-API-Key header)")


def _auth_exempt(text: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower().lstrip("/") for name in text.split(",") if name.strip())
    if names == ("none",):
        return ()
    unknown = sorted(set(names) - set(EXEMPTABLE_ENDPOINTS))
    if unknown:
        allowed = ", ".join(EXEMPTABLE_ENDPOINTS)
        raise ValueError(f"names unknown endpoints {unknown}; use a comma-separated list of {allowed}, or none")
    return names


def _rate_limits(text: str) -> str:
    value = text.strip()
    if value.lower() == "off":
        return "off"
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError(
            "must be limits in flask-limiter syntax separated by ';', such as 10/minute;1000/hour, or off"
        ) from None
    return value


def _redis_url(text: str) -> str | None:
    value = text.strip()
    if value and not value.startswith(REDIS_SCHEMES):
        raise ValueError(f"must start with one of {', '.join(REDIS_SCHEMES)} (e.g. redis://localhost:6379/0)")
    return value or None


def _log_file(text: str) -> str:
    return text.strip()  # "" disables the log file


def _webhook_hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(host.strip().lower().rstrip(".") for host in text.split(",") if host.strip())
    for host in hosts:
        name = host[2:] if host.startswith("*.") else host
        if host != "*" and (not name or any(c in name for c in "*/@?# ")):
            raise ValueError(f"has {host!r}; use comma-separated host names or IPs, *.example.com for subdomains, or *")
    return hosts


def _webhook_secret(text: str) -> str:
    value = text.strip()
    if len(value) < 16:
        raise ValueError(
            "must be at least 16 characters (e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` accepts connections from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it may be reachable from elsewhere


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
    workers: int = 1
    prometheus_multiproc_dir: str | None = None
    auth: str = "auto"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_keys_file: str | None = None
    auth_exempt: tuple[str, ...] = ("health", "metrics", "docs", "console")
    rate_limits: str = "120/minute"
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    trusted_proxies: int = 0
    log_file: str = "emotion_api.log"
    emotion_inference: bool = True
    vad: str = "silero"  # segmentation.SegmentOptions.vad has the same default
    cache_size: int = 1024
    cache_ttl: int = 86_400
    baseline_ttl_hours: float = 24.0
    model_input: str = "all"
    baseline_secret: str | None = field(default=None, repr=False)
    batch_max: int = 8
    batch_wait_ms: float = 5.0
    max_queue: int = 64
    max_decodes: int = 2
    quantize: str = "auto"
    torch_threads: int = 0  # 0: batching.plan_threads chooses
    log_max_mb: float = 10.0
    log_backups: int = 5
    job_backend: str = "local"
    job_dir: str | None = None  # None: the per-user data directory (see jobs.default_job_dir)
    job_workers: int = 1
    job_max_seconds: float = 7200.0
    job_max_attempts: int = 3
    job_retention_hours: float = 24.0
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_allow_private: bool = False
    celery_broker_url: str | None = field(default=None, repr=False)  # may carry a password
    celery_visibility_timeout: int = 3600
    stream_max_seconds: float = 1800.0
    stream_idle_seconds: float = 30.0
    max_streams: int = 8
    stream_max_frame_kb: float = 256.0
    stream_max_speed: float = 4.0

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
            if raw is None or (raw == "" and not setting.empty):
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
        has_keys = bool(self.api_keys or self.api_keys_file)
        if self.auth == "on" and not has_keys:
            raise ConfigError(
                "AUTH=on needs API keys: set API_KEYS=key1,key2 or API_KEYS_FILE=<file with one key a line>."
            )
        if self.job_backend == "celery" and not (self.celery_broker_url or self.redis_url):
            raise ConfigError(
                "JOB_BACKEND=celery needs a Redis: set CELERY_BROKER_URL (or REDIS_URL), e.g. redis://localhost:6379/1."
            )
        if self.webhook_allowed_hosts and not self.webhook_secret:
            raise ConfigError(
                "WEBHOOK_ALLOWED_HOSTS is set but WEBHOOK_SECRET is not: webhooks are always signed; set "
                "WEBHOOK_SECRET to a random string of 16+ characters shared with the receiver."
            )
        if self.auth == "auto" and not has_keys and not is_loopback(self.host):
            raise ConfigError(
                f"HOST={self.host} exposes the service, and no API keys are configured: set "
                "API_KEYS=key1,key2 or API_KEYS_FILE=<file with one key a line>, or set AUTH=off to serve "
                "without keys (only where something in front of the service authenticates clients)."
            )

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need an API key (AUTH=auto: when keys are configured)."""
        return self.auth == "on" or (self.auth == "auto" and bool(self.api_keys or self.api_keys_file))

    def with_overrides(self, **overrides: Any) -> Settings:
        settings = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        settings.validate()
        return settings


# One row a setting: the table reads better unwrapped.
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", "host", str, "Address to listen on (0.0.0.0 exposes the service)."),
    Setting("PORT", "port", _port, "Port to listen on."),
    Setting("MODEL_PRESET", "model_preset", str, "Preset of the models config to load: default (Whisper encoder + head, offline, non-commercial), commercial (the same on CREMA-D only, commercial use allowed), fast (the small CNN), or full (ExHuBERT + HuBERT-Large + Wav2Vec2-XLSR, downloaded)."),
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
    Setting("WORKERS", "workers", _positive_int, "gunicorn worker processes; each holds its own copy of the models."),
    Setting(
        "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir", _optional_path,
        "Directory where the workers share /metrics (emptied at start); a private temporary one when unset.",
    ),
    Setting("AUTH", "auth", _choice(*AUTH_MODES), "API keys: auto (required unless loopback without keys), on, off."),
    Setting("API_KEYS", "api_keys", _api_keys, "Comma-separated keys accepted in the X-API-Key header.", secret=True),
    Setting("API_KEYS_FILE", "api_keys_file", _optional_path, "File of API keys, one a line (# comments)."),
    Setting(
        "AUTH_EXEMPT", "auth_exempt", _auth_exempt,
        "Endpoints served without a key: comma-separated health, metrics, index, docs, console (the web console's page and files), or none.",
    ),
    Setting(
        "RATE_LIMITS", "rate_limits", _rate_limits,
        "Requests allowed per API key (per client IP without a key), e.g. 10/minute;1000/hour, or off.",
    ),
    Setting(
        "REDIS_URL", "redis_url", _redis_url,
        "Redis that holds the rate-limit counts for all workers and instances (else each process's memory).",
        secret=True,
    ),
    Setting(
        "TRUSTED_PROXIES", "trusted_proxies", _non_negative_int,
        "Proxies in front whose X-Forwarded-For is trusted for the client address (0: the peer address).",
    ),
    Setting("LOG_FILE", "log_file", _log_file, "JSON log file, rotated by size; empty: stdout only.", empty=True),
    Setting("LOG_MAX_MB", "log_max_mb", _positive_float, "Size at which the log file is rotated, in MB."),
    Setting("LOG_BACKUPS", "log_backups", _non_negative_int, "Rotated log files kept."),
    Setting(
        "EMOTION_INFERENCE", "emotion_inference", _on_off,
        "off: load and run no emotion model and serve delivery metrics only (where emotion recognition "
        "at work is not allowed, e.g. under the EU AI Act).",
    ),
    Setting(
        "VAD", "vad", _choice("silero", "energy"),
        "Voice activity detection that cuts whole recordings (/jobs, CLI interview mode): silero (network, "
        "robust to noise) or energy (level-relative intensity).",
    ),
    Setting(
        "CACHE_SIZE", "cache_size", _non_negative_int,
        "Results of identical audio kept (in-memory LRU entries; 0 disables; with REDIS_URL the cache is in Redis).",
    ),
    Setting("CACHE_TTL", "cache_ttl", _positive_int, "Seconds a result stays in the Redis cache."),
    Setting(
        "BASELINE_TTL_HOURS", "baseline_ttl_hours", _non_negative_float,
        "Hours a candidate's baseline (running feature statistics, never audio) is kept after their last clip; 0: no candidate baselines.",
    ),
    Setting(
        "BASELINE_SECRET", "baseline_secret", _webhook_secret,
        "Key of the HMAC that names candidates in the baseline store (16+ characters); unset: random per process, or kept in Redis with REDIS_URL.",
        secret=True,
    ),
    Setting("BATCH_MAX", "batch_max", _positive_int, "Most clips of concurrent requests run through a model together (1: no batching)."),
    Setting("BATCH_WAIT_MS", "batch_wait_ms", _non_negative_float, "Longest wait for more clips to batch, in ms."),
    Setting("MAX_QUEUE", "max_queue", _positive_int, "Clips waiting per model beyond which requests get 503 with Retry-After."),
    Setting(
        "MAX_DECODES", "max_decodes", _positive_int,
        "Uploads decoded at once per server process; a request that finds them all busy for 0.5 s gets 503 with Retry-After.",
    ),
    Setting(
        "MODEL_INPUT", "model_input", _choice("all", "speech"),
        "all, or speech: the models hear only the speech of a clip (leading, trailing and long inner silences cut by the energy VAD); delivery metrics always see the whole clip.",
    ),
    Setting("QUANTIZE", "quantize", _choice("auto", "none", "int8", "bf16"), "auto (each model as models.toml says: the encoder presets bf16 on CPUs that multiply it natively, else fp32; hub models fp32), none (fp32 everywhere), int8 (int8 matrix multiplies on CPU for every model that has them) or bf16 (the encoder presets in bfloat16 where the CPU has AVX-512 BF16 or AMX); see README."),
    Setting(
        "TORCH_THREADS", "torch_threads", _non_negative_int,
        "torch threads per model call (0: automatic: hub models all the process's cores for a call alone, one each for calls side by side; 1 for the bundled model).",
    ),
    Setting(
        "JOB_BACKEND", "job_backend", _choice("local", "celery"),
        "Where /jobs run: local (thread pool + SQLite) or celery (workers + Redis).",
    ),
    Setting(
        "JOB_DIR", "job_dir", _optional_path,
        "Directory of the local job store and of recordings waiting for a job (~/.local/share/emotion-api/jobs).",
    ),
    Setting(
        "JOB_WORKERS", "job_workers", _positive_int,
        "Jobs run at once by each server process (JOB_BACKEND=local).",
    ),
    Setting("JOB_MAX_SECONDS", "job_max_seconds", _positive_float, "Longest recording accepted by /jobs, in seconds."),
    Setting(
        "JOB_MAX_ATTEMPTS", "job_max_attempts", _positive_int,
        "Runs of a job (first one included) before it is marked failed.",
    ),
    Setting(
        "JOB_RETENTION_HOURS", "job_retention_hours", _non_negative_float,
        "Hours a finished job's result is kept before it is deleted (0: until DELETE).",
    ),
    Setting(
        "WEBHOOK_SECRET", "webhook_secret", _webhook_secret,
        "Key of the HMAC-SHA256 signature of webhook calls (16+ characters).",
        secret=True,
    ),
    Setting(
        "WEBHOOK_ALLOWED_HOSTS", "webhook_allowed_hosts", _webhook_hosts,
        "Hosts webhooks may call: comma-separated names or IPs, *.example.com, or *; empty: no webhooks.",
    ),
    Setting(
        "WEBHOOK_ALLOW_PRIVATE", "webhook_allow_private", _on_off,
        "on: webhooks may call private/loopback addresses of hosts listed exactly in WEBHOOK_ALLOWED_HOSTS.",
    ),
    Setting(
        "CELERY_BROKER_URL", "celery_broker_url", _redis_url,
        "Redis of the Celery queue and job records (JOB_BACKEND=celery); default REDIS_URL.",
        secret=True,
    ),
    Setting(
        "CELERY_VISIBILITY_TIMEOUT", "celery_visibility_timeout", _positive_int,
        "Seconds after which a job of a dead Celery worker is run again; must exceed the longest job.",
    ),
    Setting("STREAM_MAX_SECONDS", "stream_max_seconds", _positive_float, "Longest /stream, in seconds of audio (the stream is kept in memory for its summary: 32 kB a second)."),
    Setting("STREAM_IDLE_SECONDS", "stream_idle_seconds", _positive_float, "A /stream that sends nothing for this many seconds is closed."),
    Setting(
        "MAX_STREAMS", "max_streams", _positive_int,
        "Most /stream WebSockets open at once per process; each holds one of the THREADS request threads, "
        "and one thread is kept for HTTP requests (at most THREADS - 1 streams).",
    ),
    Setting("STREAM_MAX_FRAME_KB", "stream_max_frame_kb", _positive_float, "Largest binary /stream message, in kB."),
    Setting(
        "STREAM_MAX_SPEED", "stream_max_speed", _positive_float,
        "How much faster than real time a /stream client may send audio (after a 5 s head start).",
    ),
)
# fmt: on


def parse_setting(setting: Setting, raw: str) -> Any:
    """Parse one raw value, raising ConfigError that names the variable."""
    try:
        return setting.parse(raw)
    except ValueError as exc:
        shown = "(value hidden)" if setting.secret else repr(raw)
        raise ConfigError(f"{setting.env}={shown} is invalid: {exc}.") from None


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
