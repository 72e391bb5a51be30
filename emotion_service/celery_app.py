"""The Celery backend of ``/jobs`` (``JOB_BACKEND=celery``): workers on any number of machines.

Run workers with::

    JOB_BACKEND=celery CELERY_BROKER_URL=redis://redis:6379/1 \\
        celery -A emotion_service.celery_app worker --pool=prefork -c 2

Each worker process loads the models once (``worker_process_init``) and runs jobs one at a time.
Job records and waiting recordings live in the broker's Redis (:class:`~.jobs.RedisJobStore`), so
every API instance and worker sees the same jobs. Messages are acknowledged only after the job
ends (``acks_late``) and a worker process that dies mid-job has its message put back
(``task_reject_on_worker_lost``); if the whole worker is killed, Redis hands the message out again
after ``CELERY_VISIBILITY_TIMEOUT``. The job store makes sure a job's result is saved once.

Test hook: ``EMOTION_TEST_JOB_TASK=module:function`` makes the workers run that function (a
:data:`~.jobs.JobTask`) instead of loading models; only the tests set it.
"""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from redis.exceptions import RedisError

from .config import Settings
from .jobs import HOST, Job, JobQueueUnavailable, JobStatus, JobTask, RedisJobStore, new_job, run_claimed

logger = logging.getLogger(__name__)

TASK_NAME = "emotion_service.run_job"
TEST_TASK_ENV = "EMOTION_TEST_JOB_TASK"
# Loading large models happens in worker_process_init; Celery's default 4 s would kill the process.
PROCESS_START_TIMEOUT = 600.0


def broker_url(settings: Settings) -> str:
    url = settings.celery_broker_url or settings.redis_url
    if url is None:
        raise ValueError("JOB_BACKEND=celery needs CELERY_BROKER_URL or REDIS_URL")
    return url


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``, with the job task registered. Connects to nothing yet."""
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
    app.task(name=TASK_NAME, bind=True, max_retries=None)(_run_job)
    return app


# -- worker side ------------------------------------------------------------------------------------


@dataclass
class _Worker:
    """What a worker process builds once: the store, the task and the webhook sender."""

    settings: Settings
    store: RedisJobStore
    task: JobTask
    notify: Any


_worker: _Worker | None = None


def _load_test_task(spec: str) -> JobTask:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _build_worker() -> _Worker:
    import functools

    from .webhooks import notifier

    settings = Settings.from_env()
    test_task = os.environ.get(TEST_TASK_ENV)
    if test_task:
        logger.warning("%s=%s: running a test task instead of the models", TEST_TASK_ENV, test_task)
        task = _load_test_task(test_task)
    else:
        from .analyzer import SpeechEmotionAnalyzer
        from .batching import configure_torch_threads
        from .interview import run_job
        from .segmentation import SegmentOptions

        if settings.torch_threads:
            # Celery does not tell its processes how many siblings they have (-c): TORCH_THREADS
            # set to cores / -c keeps them from oversubscribing the cores.
            configure_torch_threads(settings.torch_threads)
        # One job at a time per worker process: no micro-batching; results cached like the API's.
        analyzer = SpeechEmotionAnalyzer.from_settings(settings, max_seconds=settings.job_max_seconds, batching=False)
        task = functools.partial(run_job, analyzer, segments=SegmentOptions(vad=settings.vad))
    store = RedisJobStore(broker_url(settings), retention=settings.job_retention_hours * 3600)
    return _Worker(settings, store, task, notifier(settings))


@worker_process_init.connect
def _init_worker_process(**_: Any) -> None:
    global _worker
    _worker = _build_worker()


def _run_job(self: Task, job_id: str) -> None:
    """Run one job: claim it, run the task, save the result (or queue a retry)."""
    global _worker
    if _worker is None:  # --pool=solo/threads do not send worker_process_init
        _worker = _build_worker()
    worker = _worker
    owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    max_attempts = worker.settings.job_max_attempts
    try:
        job = worker.store.claim(job_id, owner, max_attempts)
    except RedisError as exc:  # Redis restarting: the message must not be lost with the job queued
        raise self.retry(exc=exc, countdown=5) from None
    if job is None:
        logger.info("job %s was deleted or has ended; nothing to do", job_id)
        return
    if job.status is JobStatus.FAILED:
        if worker.notify is not None:
            worker.notify(job)
        return
    try:
        final = run_claimed(worker.store, job, owner, worker.task, max_attempts=max_attempts, notify=worker.notify)
    except RedisError as exc:
        # Neither the result nor the failure could be saved (Redis refusing writes): run the task
        # again later; its claim takes the job over, or fails it after JOB_MAX_ATTEMPTS runs.
        raise self.retry(exc=exc, countdown=5) from None
    if final is not None and final.status is JobStatus.QUEUED:
        raise self.retry(countdown=min(2**final.attempts, 60))


# -- API side ----------------------------------------------------------------------------------------


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


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``app``, for ``celery -A emotion_service.celery_app``: built from the environment on first access (PEP 562)."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_celery(Settings.from_env())
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
