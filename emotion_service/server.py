"""Serve the app with gunicorn: one worker process per device, request threads inside it.

One process holds one copy of the models and its threads share it (a second forked worker
would hold a second copy). Models load inside the worker, after the fork, so CUDA is never
initialised in the master process.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from .config import Settings

logger = logging.getLogger(__name__)

# Loading large models happens in the worker before it serves; the arbiter must not kill it
# meanwhile. With gthread workers this timeout only matters during that boot.
BOOT_TIMEOUT_SECONDS = 600


def configure_logging(level: str) -> None:
    """Plain logs to stdout at ``level``."""
    logging.basicConfig(
        level=level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The gunicorn settings the service runs with (also used by ``gunicorn.conf.py``)."""
    return {
        "bind": f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": BOOT_TIMEOUT_SECONDS,
        "graceful_timeout": 30,
        "keepalive": 5,
        "loglevel": settings.log_level.lower(),
        "limit_request_field_size": 8190,
        "limit_request_fields": 100,
    }


def announce_ready(settings: Settings, app: Any) -> None:
    """Print what was loaded and where the service listens."""
    analyzer = app.config["ANALYZER"]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    for model in analyzer.models.values():
        info = model.info
        note = "" if info.commercial_use else "  [non-commercial licence]"
        print(f"  model {info.name}: {info.display_name} {info.version} on {info.device}{note}", flush=True)
    for failure in analyzer.failures:
        print(f"  model {failure.name} NOT loaded: {failure.reason}", flush=True)
    state = "ready" if analyzer.models else "running WITHOUT models (see /health)"
    print(f"Speech emotion API {state}: http://{host}:{settings.port}  (health: /health)", flush=True)


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)
        settings = self.settings
        self.cfg.set("post_worker_init", lambda worker: announce_ready(settings, worker.wsgi))

    def load(self) -> Any:
        from .api import create_app

        configure_logging(self.settings.log_level)
        return create_app(self.settings, load_models="now")


def serve(settings: Settings) -> None:
    """Run the production server in the foreground until interrupted."""
    _Server(settings).run()
