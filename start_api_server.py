"""The recommended way to start the service.

Checks dependencies and settings, then serves with gunicorn (``WORKERS`` processes, default one,
whose request threads share one copy of the models), loads the models before accepting requests
and prints the URL and whether API keys are required. Every flag is also an environment variable
(``--port`` = ``PORT``); flags win.

    python start_api_server.py                      # offline default preset (Whisper encoder + head), http://127.0.0.1:5000
    python start_api_server.py --model-preset full --models-dir models
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

REQUIRED = {
    "flask": "flask",
    "gunicorn": "gunicorn",
    "numpy": "numpy",
    "soundfile": "soundfile",
    "soxr": "soxr",
    "av": "av",
    "torch": "torch",
    "transformers": "transformers",
    "librosa": "librosa",
    "prometheus_client": "prometheus-client",
    "flask_limiter": "flask-limiter",
    "silero_vad": "silero-vad",
    "redis": "redis",
    "pydantic": "pydantic",
    "flask_swagger_ui": "flask-swagger-ui",
}


def check_dependencies(required: dict[str, str] = REQUIRED) -> list[str]:
    """Return the pip names of required packages that are not installed.

    The packages are found, not imported: prometheus_client must first be imported in the
    workers, after the server has set up its multiprocess directory.
    """
    return [package for module, package in required.items() if importlib.util.find_spec(module) is None]


def describe_rate_limits(settings) -> str:
    """One line on the rate limits, e.g. ``120/minute per key or client, in Redis``."""
    if settings.rate_limits == "off":
        return "off"
    where = "in Redis" if settings.redis_url else "in memory per process"
    return f"{settings.rate_limits} per key or client, {where}"


def build_parser() -> argparse.ArgumentParser:
    from emotion_service.config import SETTINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for setting in SETTINGS:
        flag = "--" + setting.attr.replace("_", "-")
        parser.add_argument(flag, dest=setting.attr, metavar=setting.env, help=f"{setting.help} [env {setting.env}]")
    return parser


def main(argv: list[str] | None = None) -> int:
    missing = check_dependencies()
    if missing:
        print(
            f"Missing packages: {', '.join(missing)}. Install them with: pip install -r requirements.txt",
            file=sys.stderr,
        )
        return 1

    from emotion_service.config import SETTINGS, Settings, load_models_config, parse_setting
    from emotion_service.errors import ConfigError
    from emotion_service.http.auth import load_api_keys
    from emotion_service.http.logs import configure_logging
    from emotion_service.http.server import serve

    args = build_parser().parse_args(argv)
    try:
        overrides = {
            s.attr: parse_setting(s, getattr(args, s.attr)) for s in SETTINGS if getattr(args, s.attr) is not None
        }
        settings = Settings.from_env(**overrides)
        load_models_config(settings.models_config).preset(settings.model_preset)
        api_keys = load_api_keys(settings)
        configure_logging(settings)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.redis_url and check_dependencies({"redis": "redis"}):
        print("REDIS_URL is set but the redis package is missing: pip install -r requirements.txt", file=sys.stderr)
        return 1
    print(api_keys.describe(), flush=True)
    print(f"Rate limits: {describe_rate_limits(settings)}", flush=True)
    print(
        f"Starting on {settings.host}:{settings.port} with preset {settings.model_preset!r}, "
        f"{settings.workers} worker{'s' if settings.workers > 1 else ''}; loading models...",
        flush=True,
    )
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
