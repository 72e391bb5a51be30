"""The Celery workers of ``/jobs`` (``JOB_BACKEND=celery``): workers on any number of machines.

Run workers with::

    JOB_BACKEND=celery CELERY_BROKER_URL=redis://redis:6379/1 \\
        celery -A emotion_service.celery_app worker --pool=prefork -c 2

Each worker process loads the models once (``worker_process_init``) and runs jobs one at a time.
Job records and waiting recordings live in the broker's Redis (:class:`~.jobs.store.RedisJobStore`), so
every API instance and worker sees the same jobs. Messages are acknowledged only after the job
ends (``acks_late``) and a worker process that dies mid-job has its message put back
(``task_reject_on_worker_lost``); if the whole worker is killed, Redis hands the message out again
after ``CELERY_VISIBILITY_TIMEOUT``. The job store makes sure a job's result is saved once.

Test hook: ``EMOTION_TEST_JOB_TASK=module:function`` makes the workers run that function (a
:data:`~.jobs.store.JobTask`) instead of loading models; only the tests set it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from redis.exceptions import RedisError

from .analysis.analyzer import SpeechEmotionAnalyzer
from .audio.segmentation import SegmentOptions
from .config import Settings
from .jobs.celery_backend import TASK_NAME, broker_url, make_celery
from .jobs.store import HOST, JobStatus, JobTask, RedisJobStore, run_claimed
from .jobs.task import run_job
from .jobs.webhooks import notifier
from .models.threads import configure_torch_threads

logger = logging.getLogger(__name__)

TEST_TASK_ENV = "EMOTION_TEST_JOB_TASK"


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
    settings = Settings.from_env()
    test_task = os.environ.get(TEST_TASK_ENV)
    if test_task:
        logger.warning("%s=%s: running a test task instead of the models", TEST_TASK_ENV, test_task)
        task = _load_test_task(test_task)
    else:
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


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``app``, for ``celery -A emotion_service.celery_app``: built from the environment on first access (PEP 562)."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_celery(Settings.from_env())
            _app.task(name=TASK_NAME, bind=True, max_retries=None)(_run_job)
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
