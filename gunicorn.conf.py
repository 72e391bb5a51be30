"""gunicorn settings read automatically by `gunicorn emotion_api:app` run from this directory.

HOST, PORT, THREADS and LOG_LEVEL come from the environment like every other setting; flags
on the gunicorn command line (-b, -w, ...) still win.
"""

from emotion_service.config import Settings
from emotion_service.server import gunicorn_options

_settings = Settings.from_env()
globals().update(gunicorn_options(_settings))
