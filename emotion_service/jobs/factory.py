"""The job backend the settings name: ``local`` threads and SQLite, or ``celery`` workers and Redis."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Settings
from .store import Job, JobBackend, JobTask, LocalJobRunner, SQLiteJobStore, job_directory


def open_backend(settings: Settings, task: JobTask, notify: Callable[[Job], None] | None = None) -> JobBackend:
    """The backend ``settings.job_backend`` names, started.

    ``local`` runs ``task`` on threads of this process; ``celery`` only submits (the workers
    build their own task, see :mod:`emotion_service.celery_app`).
    """
    if settings.job_backend == "celery":
        from .celery_backend import CeleryJobBackend  # imported only then: it needs celery

        return CeleryJobBackend(settings)
    runner = LocalJobRunner(
        SQLiteJobStore(job_directory(settings)),
        task,
        workers=settings.job_workers,
        max_attempts=settings.job_max_attempts,
        retention=settings.job_retention_hours * 3600,
        notify=notify,
    )
    return runner.start()
