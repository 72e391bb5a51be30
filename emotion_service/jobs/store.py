"""Asynchronous jobs: a recording goes in now, its result comes out later.

A job's work is a :data:`JobTask` the caller supplies (the service passes
``functools.partial(interview.run_job, analyzer)``), so nothing here knows about emotion models.
Job records live in a :class:`JobStore`: :class:`SQLiteJobStore` for the embedded default (one
machine, :class:`LocalJobRunner` runs the jobs on threads) and :class:`RedisJobStore` for the
Celery backend (:mod:`.celery_backend`, workers in :mod:`emotion_service.celery_app`), both driven by :func:`run_claimed`.

Recordings are personal data: a job's audio is stored only while the job may still run, and is
deleted the moment the job is done, failed or deleted. It is never logged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ServiceError

if TYPE_CHECKING:
    from ..config import Settings

logger = logging.getLogger(__name__)

JobTask = Callable[[bytes, dict[str, Any], Callable[[float], None]], dict[str, Any]]
"""The work of a job: (encoded audio, options, progress callback taking 0..1) -> JSON-able result."""

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
STORE_FILE = "jobs.sqlite3"
HOST = socket.gethostname()


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED)


@dataclass
class Job:
    """One job's record. ``progress`` is 0..1; times are Unix seconds."""

    id: str
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    options: dict[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
    owner: str | None = None  # who runs it now: only that runner may save its progress and result


class JobNotFound(ServiceError):
    """No job has this id (never existed, deleted, or past its retention)."""

    status = 404
    error_code = "JOB_NOT_FOUND"


class JobQueueUnavailable(ServiceError):
    """The job queue (Redis) cannot be reached; the job was not accepted."""

    status = 503
    error_code = "JOBS_UNAVAILABLE"


class JobStoreFull(ServiceError):
    """The job store's disk is full (or over its quota); the job was not accepted and nothing of it was kept."""

    status = 507
    error_code = "JOB_STORE_FULL"

    def __init__(self) -> None:
        super().__init__(
            "The job store is out of disk space, so the job was not accepted; retry later. "
            "Operators: free disk space in JOB_DIR, or lower JOB_RETENTION_HOURS."
        )


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def store_errors() -> tuple[type[BaseException], ...]:
    """What a job store raises when it cannot write: SQLite and the filesystem, or Redis."""
    from redis.exceptions import RedisError

    return (sqlite3.Error, OSError, RedisError)


def result_not_saved_message(exc: BaseException) -> str:
    """Why a finished job's result could not be saved, and what to do about it."""
    text = str(exc)
    full = _disk_full(exc) or "OOM" in text or "maxmemory" in text or "MISCONF" in text
    cause = (
        "the job store is full (disk or Redis memory)" if full else f"the job store refused it ({type(exc).__name__})"
    )
    return (
        f"The analysis finished but its result could not be saved: {cause}. It runs again while attempts "
        "remain (JOB_MAX_ATTEMPTS); otherwise submit the job again later. Operators: free space in JOB_DIR "
        "or memory in Redis."
    )


class JobAbandoned(Exception):
    """Raised inside a task's progress callback when its job was deleted or taken over: stop working."""


def new_job(options: dict[str, Any], webhook_url: str | None = None) -> Job:
    """A queued job with a random id (uuid4 hex: unguessable, and safe as a file name)."""
    return Job(id=uuid.uuid4().hex, options=dict(options), webhook_url=webhook_url)


def valid_job_id(job_id: str) -> bool:
    return bool(JOB_ID.match(job_id))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(job: Job) -> dict[str, Any]:
    """The public view of a job (``GET /jobs/<id>`` data and webhook body): no audio, no owner."""
    data: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status.value,
        "progress": round(100 * job.progress, 1),
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
    }
    if job.status is JobStatus.DONE:
        data["result"] = job.result
    if job.error is not None:
        data["error"] = {"error_code": job.error_code, "message": job.error}
    return data


def job_directory(settings: Settings) -> Path:
    """``JOB_DIR``, else ``$XDG_DATA_HOME/emotion-api/jobs``, else ``~/.local/share/emotion-api/jobs``."""
    if settings.job_dir:
        return Path(settings.job_dir)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "emotion-api" / "jobs"


class JobStore(Protocol):
    """Where job records and their audio live; shared by the API and whoever runs the jobs.

    ``owner`` identifies one run of a job: a run whose job was taken over (its runner was
    presumed dead) or deleted can no longer change it, so a job is completed at most once.
    """

    def create(self, job: Job, audio: bytes) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def audio(self, job_id: str) -> bytes | None: ...

    def progress(self, job_id: str, owner: str, fraction: float) -> bool:
        """Save progress; False when ``owner`` no longer runs the job."""
        ...

    def finish(self, job_id: str, owner: str, result: dict[str, Any]) -> Job | None:
        """Save the result and delete the audio; None when ``owner`` no longer runs the job."""
        ...

    def fail(
        self, job_id: str, owner: str, error: str, error_code: str, *, retry: bool, max_attempts: int
    ) -> Job | None:
        """Re-queue the job (``retry`` and attempts left) or mark it failed and delete the audio."""
        ...

    def delete(self, job_id: str) -> bool: ...


# -- running one claimed job --------------------------------------------------------------------


class _Progress:
    """The progress callback handed to a task: clamped, monotonic, and throttled before it is saved."""

    def __init__(self, store: JobStore, job_id: str, owner: str, interval: float = 0.5) -> None:
        self.store, self.job_id, self.owner, self.interval = store, job_id, owner, interval
        self.saved = 0.0
        self.saved_at = 0.0

    def __call__(self, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 0.999)  # 1.0 is saved with the result
        now = time.monotonic()
        if fraction <= self.saved or (fraction - self.saved < 0.05 and now - self.saved_at < self.interval):
            return
        if not self.store.progress(self.job_id, self.owner, fraction):
            raise JobAbandoned(self.job_id)
        self.saved, self.saved_at = fraction, now


def run_claimed(
    store: JobStore,
    job: Job,
    owner: str,
    task: JobTask,
    *,
    max_attempts: int,
    notify: Callable[[Job], None] | None = None,
) -> Job | None:
    """Run a job that ``owner`` has claimed, and record how it ended.

    A :class:`~emotion_service.errors.ServiceError` (e.g. the audio cannot be decoded) fails the
    job at once; any other exception re-queues it until ``max_attempts`` runs have failed.
    ``notify`` gets the job when it ends (done or failed), for webhooks.

    Returns:
        The job as saved, or None when it was deleted or taken over meanwhile.
    """
    audio = store.audio(job.id)
    if audio is None:
        final = store.fail(job.id, owner, "The recording of this job is no longer stored; submit it again.",
                           "AUDIO_GONE", retry=False, max_attempts=max_attempts)  # fmt: skip
    else:
        try:
            result = task(audio, dict(job.options), _Progress(store, job.id, owner))
        except JobAbandoned:
            logger.info("job %s was deleted or taken over while running; its run stops", job.id)
            return None
        except ServiceError as exc:
            final = store.fail(job.id, owner, exc.message, exc.error_code, retry=False, max_attempts=max_attempts)
        except Exception as exc:  # noqa: BLE001 - the job boundary: any bug is recorded on the job and retried
            logger.exception("job %s failed on attempt %d", job.id, job.attempts)
            final = store.fail(job.id, owner, f"The analysis failed ({type(exc).__name__}: {exc}).",
                               "JOB_ERROR", retry=True, max_attempts=max_attempts)  # fmt: skip
        else:
            try:
                final = store.finish(job.id, owner, result)
            except store_errors() as exc:
                # A full disk, or Redis refusing writes: record that instead of the result, which
                # is smaller (or frees the recording), so the job is retried or failed, not left
                # 'running'. If even that cannot be written the caller gets the error and retries.
                logger.warning("job %s: its result could not be saved (%s)", job.id, exc)
                final = store.fail(job.id, owner, result_not_saved_message(exc), "RESULT_NOT_SAVED",
                                   retry=True, max_attempts=max_attempts)  # fmt: skip
        finally:
            del audio
    if final is not None and final.status.terminal:
        logger.info("job %s %s after %d attempt(s)", job.id, final.status.value, final.attempts)
        if notify is not None:
            notify(final)
    return final


def interrupted_message(attempts: int) -> str:
    return (
        f"The job was interrupted {attempts} times (its worker stopped or restarted mid-job) and was given up "
        "(JOB_MAX_ATTEMPTS); submit it again, and check the workers' memory and logs."
    )


# -- SQLite store (JOB_BACKEND=local) --------------------------------------------------------------

_COLUMNS = (
    "id", "status", "progress", "created_at", "updated_at", "options", "webhook_url",
    "attempts", "result", "error", "error_code", "owner",
)  # fmt: skip
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    options TEXT NOT NULL,
    webhook_url TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    error_code TEXT,
    owner TEXT,
    heartbeat REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
"""


def _job_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    values = dict(zip(_COLUMNS, row, strict=False))
    return Job(
        id=values["id"],
        status=JobStatus(values["status"]),
        progress=values["progress"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        options=json.loads(values["options"]),
        webhook_url=values["webhook_url"],
        attempts=values["attempts"],
        result=None if values["result"] is None else json.loads(values["result"]),
        error=values["error"],
        error_code=values["error_code"],
        owner=values["owner"],
    )


class SQLiteJobStore:
    """Job records in ``<directory>/jobs.sqlite3``, each waiting recording in ``<directory>/audio/<id>``.

    Safe to share between the threads of a process and between the processes of one machine
    (every change is one SQLite transaction). Directories and files are private to the user.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.audio_dir = self.directory / "audio"
        self.audio_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.directory / STORE_FILE, timeout=30, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted results are overwritten, not left in free pages
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (it does on a full disk), and a failed COMMIT
                # leaves the transaction open: either way none may stay open, or the store is stuck.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _audio_path(self, job_id: str) -> Path:
        if not valid_job_id(job_id):  # ids become file names: never let one be a path
            raise ValueError(f"invalid job id {job_id!r}")
        return self.audio_dir / job_id

    def _remove_audio(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._audio_path(job_id).unlink()

    def _get(self, db: sqlite3.Connection, job_id: str) -> Job | None:
        row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job_from_row(row)

    def create(self, job: Job, audio: bytes) -> None:
        """Store a new job and its recording.

        Raises:
            JobStoreFull: The disk is full; neither the recording nor the record was kept.
        """
        path = self._audio_path(job.id)
        partial = path.with_suffix(".part")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(audio)
            os.replace(partial, path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()  # at once: a partial recording would keep the disk full
            if _disk_full(exc):
                raise JobStoreFull() from exc
            raise
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO jobs (id, status, progress, created_at, updated_at, options, webhook_url, attempts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.id,
                        job.status.value,
                        job.progress,
                        job.created_at,
                        job.updated_at,
                        json.dumps(job.options),
                        job.webhook_url,
                        job.attempts,
                    ),  # fmt: skip
                )
        except sqlite3.Error as exc:
            self._remove_audio(job.id)
            if _disk_full(exc):
                raise JobStoreFull() from exc
            raise

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._get(self._db, job_id)

    def audio(self, job_id: str) -> bytes | None:
        try:
            return self._audio_path(job_id).read_bytes()
        except FileNotFoundError:
            return None

    def claim_next(self, owner: str) -> Job | None:
        """Take the oldest queued job: it becomes ``running`` under ``owner``, one attempt more."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, owner = ?, heartbeat = ?, updated_at = ? "
                "WHERE id = ?",
                (owner, now, now, row[0]),
            )
            return self._get(db, row[0])

    def progress(self, job_id: str, owner: str, fraction: float) -> bool:
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET progress = MAX(progress, ?), updated_at = ?, heartbeat = ? "
                "WHERE id = ? AND owner = ? AND status = 'running'",
                (fraction, now, now, job_id, owner),
            )
            return cursor.rowcount == 1

    def finish(self, job_id: str, owner: str, result: dict[str, Any]) -> Job | None:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'done', progress = 1, result = ?, error = NULL, error_code = NULL, "
                "owner = NULL, updated_at = ? WHERE id = ? AND owner = ? AND status = 'running'",
                (json.dumps(result), time.time(), job_id, owner),
            )
            job = self._get(db, job_id) if cursor.rowcount == 1 else None
            if job is not None:  # before the commit: no reader sees the job ended while its audio remains
                self._remove_audio(job_id)
        return job

    def fail(
        self, job_id: str, owner: str, error: str, error_code: str, *, retry: bool, max_attempts: int
    ) -> Job | None:
        with self._transaction() as db:
            job = self._get(db, job_id)
            if job is None or job.owner != owner or job.status is not JobStatus.RUNNING:
                return None
            status = JobStatus.QUEUED if retry and job.attempts < max_attempts else JobStatus.FAILED
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, error_code = ?, owner = NULL, updated_at = ? WHERE id = ?",
                (status.value, error, error_code, time.time(), job_id),
            )
            job = self._get(db, job_id)
            if status is JobStatus.FAILED:
                self._remove_audio(job_id)
        return job

    def delete(self, job_id: str) -> bool:
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1
            self._remove_audio(job_id)
        return deleted

    def touch(self, owner: str) -> None:
        """Heartbeat: ``owner`` still runs its jobs."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET heartbeat = ? WHERE owner = ? AND status = 'running'", (time.time(), owner))

    def recover(self, alive: Callable[[str, float], bool], max_attempts: int) -> list[Job]:
        """Re-queue running jobs whose runner is gone (``alive(owner, heartbeat_age)`` is False).

        Jobs that already had ``max_attempts`` runs are marked failed instead.

        Returns:
            The jobs that were marked failed (for their webhooks).
        """
        failed: list[Job] = []
        now = time.time()
        with self._transaction() as db:
            rows = db.execute("SELECT id, owner, heartbeat, attempts FROM jobs WHERE status = 'running'").fetchall()
            for job_id, owner, heartbeat, attempts in rows:
                if alive(owner or "", now - (heartbeat or 0.0)):
                    continue
                if attempts >= max_attempts:
                    db.execute(
                        "UPDATE jobs SET status = 'failed', error = ?, error_code = 'JOB_INTERRUPTED', owner = NULL, "
                        "updated_at = ? WHERE id = ?",
                        (interrupted_message(attempts), now, job_id),
                    )
                    failed.append(self._get(db, job_id))  # type: ignore[arg-type]
                    self._remove_audio(job_id)
                else:
                    logger.info("job %s was running when its runner stopped; queued again", job_id)
                    db.execute(
                        "UPDATE jobs SET status = 'queued', owner = NULL, updated_at = ? WHERE id = ?", (now, job_id)
                    )
        return failed

    def purge(self, finished_before: float) -> int:
        """Delete jobs that ended before ``finished_before``, and any recording whose job has ended."""
        with self._transaction() as db:
            purged = db.execute(
                "DELETE FROM jobs WHERE status IN ('done', 'failed') AND updated_at < ?", (finished_before,)
            ).rowcount
            waiting = {row[0] for row in db.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')")}
        for path in self.audio_dir.iterdir():
            # A crash between saving a result and deleting the audio leaves the file behind: sweep it.
            if path.name not in waiting and (path.suffix != ".part" or time.time() - path.stat().st_mtime > 3600):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return purged


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalJobRunner:
    """Runs jobs of a :class:`SQLiteJobStore` on ``workers`` threads of this process.

    On :meth:`start` (and then every ``heartbeat`` seconds) running jobs whose runner is gone are
    queued again (or failed after ``max_attempts``), and finished jobs past their retention are
    deleted. Several processes of one machine may share a store; each claims jobs atomically.

    Args:
        store: The job store.
        task: The work of a job.
        workers: Jobs run at once.
        max_attempts: Runs of a job before it is marked failed.
        retention: Seconds a finished job is kept; 0 keeps it until deleted.
        notify: Called with each job that ends (webhooks).
        poll: Seconds between looks for jobs queued by other processes.
        heartbeat: Seconds between heartbeats and housekeeping.
        lease: A running job whose runner gave no heartbeat for this long is presumed orphaned.
    """

    def __init__(
        self,
        store: SQLiteJobStore,
        task: JobTask,
        *,
        workers: int = 1,
        max_attempts: int = 3,
        retention: float = 86_400.0,
        notify: Callable[[Job], None] | None = None,
        poll: float = 1.0,
        heartbeat: float = 30.0,
        lease: float = 120.0,
    ) -> None:
        self.store = store
        self.task = task
        self.workers = workers
        self.max_attempts = max_attempts
        self.retention = retention
        self.notify = notify
        self.poll, self.heartbeat, self.lease = poll, heartbeat, lease
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _alive(self, owner: str, heartbeat_age: float) -> bool:
        if owner == self.owner:
            return True
        host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if host == HOST and pid_text.isdigit():
            pid = int(pid_text)
            # Our own pid under another token is an earlier run of this process (restarted containers reuse pids).
            if pid == os.getpid() or not _pid_alive(pid):
                return False
        return heartbeat_age < self.lease

    def housekeeping(self) -> None:
        """Heartbeat, recover orphaned jobs, delete expired ones."""
        self.store.touch(self.owner)
        for job in self.store.recover(self._alive, self.max_attempts):
            logger.warning("job %s failed: %s", job.id, job.error)
            if self.notify is not None:
                self.notify(job)
        if self.retention > 0:
            purged = self.store.purge(time.time() - self.retention)
            if purged:
                logger.info("deleted %d finished job(s) past their retention", purged)
        self._wake.set()  # jobs may have been queued again

    def start(self) -> LocalJobRunner:
        if self._threads:
            return self
        self.housekeeping()
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"job-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        keeper = threading.Thread(target=self._keep, name="job-housekeeping", daemon=True)
        keeper.start()
        self._threads.append(keeper)
        return self

    def _keep(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self.housekeeping()
            except sqlite3.Error:
                logger.exception("job housekeeping failed; trying again in %s s", self.heartbeat)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_next(self.owner)
            except sqlite3.Error:
                logger.exception("cannot read the job store; trying again in %s s", self.poll)
                job = None
            if job is None:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            try:
                run_claimed(self.store, job, self.owner, self.task, max_attempts=self.max_attempts, notify=self.notify)
            except (sqlite3.Error, OSError) as exc:
                logger.exception("job %s: its outcome could not be saved", job.id)
                self._settle(job, exc)

    def _settle(self, job: Job, exc: BaseException) -> None:
        """Record a job whose outcome could not be saved as to be retried, once the store takes writes.

        Tried every ``poll`` seconds (doubling up to 30 s) until it succeeds or the runner stops;
        a runner that stops leaves the job 'running' under its owner, queued again at the next start.
        """
        delay = self.poll
        while not self._stop.wait(delay):
            try:
                final = self.store.fail(job.id, self.owner, result_not_saved_message(exc), "RESULT_NOT_SAVED",
                                        retry=True, max_attempts=self.max_attempts)  # fmt: skip
            except (sqlite3.Error, OSError):
                delay = min(delay * 2, 30.0)
                continue
            if final is not None and final.status.terminal and self.notify is not None:
                self.notify(final)
            return

    def submit(self, audio: bytes, options: dict[str, Any], webhook_url: str | None = None) -> Job:
        job = new_job(options, webhook_url)
        self.store.create(job, audio)
        self._wake.set()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def delete(self, job_id: str) -> bool:
        return self.store.delete(job_id)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking jobs and wait up to ``timeout`` s for running ones (they are recovered at the next start)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self.store.close()
        self._threads = []


# -- Redis store (JOB_BACKEND=celery) --------------------------------------------------------------

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' then return false end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[4], 'error_code', 'JOB_INTERRUPTED',
             'owner', '', 'updated_at', ARGV[2])
  redis.call('DEL', KEYS[2])
  if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
  return 'failed'
end
redis.call('HSET', KEYS[1], 'status', 'running', 'attempts', attempts + 1, 'owner', ARGV[1], 'updated_at', ARGV[2])
return 'running'
"""
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'progress')) then
  redis.call('HSET', KEYS[1], 'progress', ARGV[2])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return 1
"""
_FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'done', 'progress', '1', 'result', ARGV[2], 'owner', '', 'updated_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'error', 'error_code')
redis.call('DEL', KEYS[2])
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
"""
_FAIL = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return false
end
redis.call('HSET', KEYS[1], 'error', ARGV[2], 'error_code', ARGV[3], 'owner', '', 'updated_at', ARGV[4])
if ARGV[5] == '1' and tonumber(redis.call('HGET', KEYS[1], 'attempts')) < tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'status', 'queued')
  return 'queued'
end
redis.call('HSET', KEYS[1], 'status', 'failed')
redis.call('DEL', KEYS[2])
if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end
return 'failed'
"""


class RedisJobStore:
    """Job records as Redis hashes, each waiting recording as a Redis string, shared by API and workers.

    A finished job expires after ``retention`` seconds (0: kept until deleted). Every change is
    one Lua script, so the API and any number of workers see consistent records.
    """

    def __init__(self, url: str, *, retention: float = 86_400.0, prefix: str = "emotion-jobs") -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        self.retention = int(retention)
        self.prefix = prefix
        self._claim = self.redis.register_script(_CLAIM)
        self._progress = self.redis.register_script(_PROGRESS)
        self._finish = self.redis.register_script(_FINISH)
        self._fail = self.redis.register_script(_FAIL)

    def _keys(self, job_id: str) -> list[str]:
        return [f"{self.prefix}:job:{job_id}", f"{self.prefix}:audio:{job_id}"]

    def create(self, job: Job, audio: bytes) -> None:
        job_key, audio_key = self._keys(job.id)
        fields = {
            "status": job.status.value,
            "progress": job.progress,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "options": json.dumps(job.options),
            "webhook_url": job.webhook_url or "",
            "attempts": job.attempts,
            "owner": "",
        }
        with self.redis.pipeline() as pipe:
            pipe.set(audio_key, audio)
            pipe.hset(job_key, mapping=fields)
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(self._keys(job_id)[0])
        if not raw:
            return None
        values = {key.decode(): value.decode() for key, value in raw.items()}
        return Job(
            id=job_id,
            status=JobStatus(values["status"]),
            progress=float(values["progress"]),
            created_at=float(values["created_at"]),
            updated_at=float(values["updated_at"]),
            options=json.loads(values["options"]),
            webhook_url=values.get("webhook_url") or None,
            attempts=int(values["attempts"]),
            result=json.loads(values["result"]) if "result" in values else None,
            error=values.get("error"),
            error_code=values.get("error_code"),
            owner=values.get("owner") or None,
        )

    def audio(self, job_id: str) -> bytes | None:
        return self.redis.get(self._keys(job_id)[1])  # type: ignore[return-value]

    def claim(self, job_id: str, owner: str, max_attempts: int) -> Job | None:
        """Start a run of a queued job, or of a running one whose worker died (the broker redelivered it).

        Returns:
            The job (``running``, or ``failed`` when it had ``max_attempts`` runs already), or None
            when it was deleted or has ended.
        """
        outcome = self._claim(
            keys=self._keys(job_id),
            args=[owner, time.time(), max_attempts, interrupted_message(max_attempts), self.retention],
        )
        return None if outcome is None else self.get(job_id)

    def progress(self, job_id: str, owner: str, fraction: float) -> bool:
        return bool(self._progress(keys=self._keys(job_id)[:1], args=[owner, fraction, time.time()]))

    def finish(self, job_id: str, owner: str, result: dict[str, Any]) -> Job | None:
        done = self._finish(keys=self._keys(job_id), args=[owner, json.dumps(result), time.time(), self.retention])
        return self.get(job_id) if done else None

    def fail(
        self, job_id: str, owner: str, error: str, error_code: str, *, retry: bool, max_attempts: int
    ) -> Job | None:
        outcome = self._fail(
            keys=self._keys(job_id),
            args=[owner, error, error_code, time.time(), "1" if retry else "0", max_attempts, self.retention],
        )
        return None if outcome is None else self.get(job_id)

    def delete(self, job_id: str) -> bool:
        return self.redis.delete(*self._keys(job_id)) > 0  # type: ignore[operator]


# -- choosing the backend ------------------------------------------------------------------------


class JobBackend(Protocol):
    """What the HTTP layer needs from either backend."""

    def submit(self, audio: bytes, options: dict[str, Any], webhook_url: str | None = None) -> Job: ...

    def get(self, job_id: str) -> Job | None: ...

    def delete(self, job_id: str) -> bool: ...

    def close(self) -> None: ...
