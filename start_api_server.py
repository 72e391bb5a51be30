"""The recommended way to start the service.

Checks dependencies and settings, then serves with gunicorn (one process, request threads
sharing one copy of the models), loads the models before accepting requests and prints the URL.
Every flag is also an environment variable (``--port`` = ``PORT``); flags win.

    python start_api_server.py                      # bundled offline model, http://127.0.0.1:5000
    python start_api_server.py --model-preset full --models-dir models
"""

from __future__ import annotations

import argparse
import importlib
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
}


def check_dependencies() -> list[str]:
    """Return the pip names of required packages that cannot be imported."""
    missing = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


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
        print(f"Missing packages: {', '.join(missing)}. Install them with: pip install -r requirements.txt", file=sys.stderr)
        return 1

    from emotion_service.config import SETTINGS, Settings, load_models_config, parse_setting
    from emotion_service.errors import ConfigError
    from emotion_service.server import serve

    args = build_parser().parse_args(argv)
    try:
        overrides = {s.attr: parse_setting(s, getattr(args, s.attr)) for s in SETTINGS if getattr(args, s.attr) is not None}
        settings = Settings.from_env(**overrides)
        load_models_config(settings.models_config).preset(settings.model_preset)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"Starting on {settings.host}:{settings.port} with preset {settings.model_preset!r}; loading models...", flush=True)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
