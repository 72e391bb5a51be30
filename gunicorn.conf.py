"""gunicorn settings read automatically by `gunicorn emotion_api:app` run from this directory.

HOST, PORT, WORKERS, THREADS and LOG_LEVEL come from the environment like every other setting;
flags on the gunicorn command line (-b, -w, ...) still win. The hooks keep /metrics right with
several workers (prometheus_client multiprocess mode, see emotion_service/http/server.py).
"""

from emotion_service.config import Settings
from emotion_service.http.server import gunicorn_options, metrics_directory, metrics_hooks

_settings = Settings.from_env()
globals().update(gunicorn_options(_settings))
globals().update(metrics_hooks(*metrics_directory(_settings)))
