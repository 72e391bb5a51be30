"""The Celery backend of ``/jobs`` (``JOB_BACKEND=celery``), API side: jobs are queued for workers.

The workers are :mod:`emotion_service.celery_app` (``celery -A emotion_service.celery_app worker``).
Job records and waiting recordings live in the broker's Redis (:class:`~.store.RedisJobStore`), so
every API instance and worker sees the same jobs.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from ..config import Settings
from .store import Job, JobQueueUnavailable, RedisJobStore, new_job

logger = logging.getLogger(__name__)

TASK_NAME = "emotion_service.run_job"
# Loading large models happens in worker_process_init; Celery's default 4 s would kill the process.
PROCESS_START_TIMEOUT = 600.0


def broker_url(settings: Settings) -> str:
    url = settings.celery_broker_url or settings.redis_url
    if url is None:
        raise ValueError("JOB_BACKEND=celery needs CELERY_BROKER_URL or REDIS_URL")
    return url


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (no task registered: the API only sends). Connects to nothing yet."""
    visibility = settings.celery_visibility_timeout
    app = Celery("emotion_service", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds only the job it runs: others stay free for other workers
        task_ignore_result=True,  # job state lives in the job store
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_proc_alive_timeout=PROCESS_START_TIMEOUT,
        broker_transport_options={
            "visibility_timeout": visibility,
            # Look for messages of dead workers often enough for the visibility timeout to matter.
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
        },
    )
    return app


class CeleryJobBackend:
    """Submits jobs to Celery workers and reads their records from Redis."""

    def __init__(self, settings: Settings) -> None:
        import redis
        from kombu.exceptions import OperationalError

        self.store = RedisJobStore(broker_url(settings), retention=settings.job_retention_hours * 3600)
        self.celery = make_celery(settings)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OperationalError)

    def _unavailable(self) -> JobQueueUnavailable:
        logger.exception("the job queue cannot be reached")
        return JobQueueUnavailable("The job queue (Redis) cannot be reached; try again in a minute.")

    def submit(self, audio: bytes, options: dict[str, Any], webhook_url: str | None = None) -> Job:
        job = new_job(options, webhook_url)
        try:
            self.store.create(job, audio)
            self.celery.send_task(TASK_NAME, args=[job.id])
        except self._errors:
            try:
                self.store.delete(job.id)
            except self._errors:
                logger.warning("job %s could not be removed after a failed submission", job.id)
            raise self._unavailable() from None
        return job

    def get(self, job_id: str) -> Job | None:
        try:
            return self.store.get(job_id)
        except self._errors:
            raise self._unavailable() from None

    def delete(self, job_id: str) -> bool:
        try:
            return self.store.delete(job_id)
        except self._errors:
            raise self._unavailable() from None

    def close(self) -> None:
        self.store.redis.close()
