"""Serve the app with gunicorn: ``WORKERS`` processes (default one), request threads inside each.

One process holds one copy of the models and its threads share it (each further worker holds
another copy). Models load inside the worker, after the fork, so CUDA is never initialised in
the master process.

The workers share ``/metrics`` through prometheus_client's multiprocess mode: the master picks
the directory (``PROMETHEUS_MULTIPROC_DIR``, or a private temporary one), empties it before the
workers start and marks each dead worker, so a scrape of any worker sums all of them. Nothing
here imports prometheus_client: the directory must be set before it is first imported.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from ..config import Settings
from .logs import JsonFormatter

# Loading large models happens in the worker before it serves; the arbiter must not kill it
# meanwhile. With gthread workers this timeout only matters during that boot.
BOOT_TIMEOUT_SECONDS = 600
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class JsonGunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own messages (start, worker boots and exits) as JSON lines on stdout, like ours."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The gunicorn settings the service runs with (also used by ``gunicorn.conf.py``)."""
    return {
        "bind": f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": BOOT_TIMEOUT_SECONDS,
        "graceful_timeout": 30,
        "keepalive": 5,
        "loglevel": settings.log_level.lower(),
        "limit_request_field_size": 8190,
        "limit_request_fields": 100,
        "logger_class": JsonGunicornLogger,
        # gunicorn 24+ opens a control socket at one fixed path per user; several instances on
        # one machine would take it from each other, and the service does not use it.
        "control_socket_disable": True,
    }


def metrics_directory(settings: Settings) -> tuple[str, bool]:
    """Point prometheus_client's multiprocess mode at a directory; return it and whether it is private.

    Sets ``PROMETHEUS_MULTIPROC_DIR`` in this (the master) process so that the workers inherit it.
    """
    path = settings.prometheus_multiproc_dir
    private = path is None
    if path is None:
        path = tempfile.mkdtemp(prefix="emotion-metrics-")
    else:
        os.makedirs(path, exist_ok=True)
    os.environ[METRICS_ENV] = path
    return path, private


def wipe_metrics_directory(path: str) -> None:
    """Delete the values of an earlier run, before any worker of this one writes."""
    for stale in glob.glob(os.path.join(path, "*.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)


def metrics_hooks(path: str, private: bool) -> dict[str, Any]:
    """gunicorn server hooks that keep the shared metrics directory right."""

    def on_starting(server: Any) -> None:
        wipe_metrics_directory(path)

    def child_exit(server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, path)

    def on_exit(server: Any) -> None:
        if private:
            shutil.rmtree(path, ignore_errors=True)

    return {"on_starting": on_starting, "child_exit": child_exit, "on_exit": on_exit}


def announce_ready(settings: Settings, app: Any) -> None:
    """Print what was loaded and where the service listens."""
    analyzer = app.config["ANALYZER"]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    for model in analyzer.models.values():
        info = model.info
        note = "" if info.commercial_use else "  [non-commercial licence]"
        print(
            f"  model {info.name}: {info.display_name} {info.version} on {info.device} ({info.dtype}){note}", flush=True
        )
    for failure in analyzer.failures:
        print(f"  model {failure.name} NOT loaded: {failure.reason}", flush=True)
    state = "ready" if analyzer.models else "running WITHOUT models (see /health)"
    url = f"http://{host}:{settings.port}"
    print(f"Speech emotion API {state}: {url}  (health: /health, metrics: /metrics)", flush=True)


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:  # settings of newer gunicorn releases are left out on older ones
                self.cfg.set(key, value)
        for key, hook in metrics_hooks(*metrics_directory(self.settings)).items():
            self.cfg.set(key, hook)
        settings = self.settings
        self.cfg.set("post_worker_init", lambda worker: announce_ready(settings, worker.wsgi))

    def load(self) -> Any:
        from ..models.threads import configure_threads
        from .app import create_app
        from .logs import configure_logging

        configure_logging(self.settings)
        configure_threads(self.settings)  # in the worker, before its models load
        return create_app(self.settings, load_models="now")


def serve(settings: Settings) -> None:
    """Run the production server in the foreground until interrupted."""
    _Server(settings).run()
