"""The API server, as the spec names it.

- ``gunicorn emotion_api:app`` serves it (settings in ``gunicorn.conf.py`` and the environment);
- ``python emotion_api.py`` serves it the same way as ``start_api_server.py``, without its checks.

``app`` is built on first access (PEP 562), so importing this module loads no model.
"""

from __future__ import annotations

from typing import Any

from emotion_service.http.app import create_app
from emotion_service.models.threads import configure_threads

__all__ = ["app", "create_app"]  # noqa: F822  (app: module __getattr__)

_app = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            from emotion_service.config import Settings
            from emotion_service.http.logs import configure_logging

            settings = Settings.from_env()
            configure_logging(settings)
            configure_threads(settings)  # TORCH_THREADS, in the worker, before its models load
            _app = create_app(settings, load_models="background")
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from emotion_service.config import Settings
    from emotion_service.http.server import serve

    serve(Settings.from_env())
