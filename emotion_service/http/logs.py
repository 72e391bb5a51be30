"""Structured logs: one JSON object a line, to stdout and to a size-rotated file.

Every record has ``time``, ``level``, ``logger`` and ``message``; records written while a request
is served carry its ``request_id``; access records add ``method``, ``path``, ``status``,
``bytes_in``, ``bytes_out`` and ``duration``. Audio, base64 and API keys are never logged: the
HTTP layer passes only sizes, timings and ids.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from contextvars import ContextVar
from datetime import datetime, timezone

from ..config import Settings
from ..errors import ConfigError

# The request being served by this thread; set and cleared by the HTTP layer.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

ACCESS_FIELDS = ("request_id", "method", "path", "endpoint", "status", "bytes_in", "bytes_out", "duration", "client")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


def configure_logging(settings: Settings) -> None:
    """Send all logs as JSON lines to stdout and, unless ``LOG_FILE`` is empty, to that file.

    The file is rotated at ``LOG_MAX_MB`` keeping ``LOG_BACKUPS`` old files. With several
    workers each process rotates on its own; collect stdout instead if exact rotation matters.

    Raises:
        ConfigError: The log file cannot be opened.
    """
    formatter = JsonFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if settings.log_file:
        try:
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    settings.log_file,
                    maxBytes=int(settings.log_max_mb * 1_000_000),
                    backupCount=settings.log_backups,
                    encoding="utf-8",
                )
            )
        except OSError as exc:
            raise ConfigError(
                f"LOG_FILE={settings.log_file!r} cannot be opened ({exc.strerror}); choose a writable path, "
                "or set LOG_FILE= (empty) to log to stdout only."
            ) from None
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_RequestIdFilter())
    logging.basicConfig(level=settings.log_level, handlers=handlers, force=True)
    # Werkzeug's own access lines would repeat ours (only under the development server).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
