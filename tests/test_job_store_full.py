"""A job whose result cannot be saved is retried or failed with RESULT_NOT_SAVED, never left running.

The store fills while the job runs: SQLite reaches ``max_page_count`` (SQLITE_FULL, what a full
disk gives) so the result cannot be written; or every write fails for a while (the disk is so
full that not even the failure fits), and the runner records the outcome once the store takes
writes again, without a restart.
"""

from __future__ import annotations

import sqlite3
import time

from emotion_service.jobs.store import LocalJobRunner, SQLiteJobStore, new_job

from .test_jobs import CLIP, wait_for

BIG_RESULT = {"transcript": "x" * 200_000}  # needs ~50 new pages


class FillsTheStore:
    """A task that fills the store while it runs, on its first ``full_runs`` runs."""

    def __init__(self, store: SQLiteJobStore, full_runs: int) -> None:
        self.store, self.full_runs, self.calls = store, full_runs, 0

    def __call__(self, audio, options, progress):
        self.calls += 1
        pages = self.store._db.execute("PRAGMA page_count").fetchone()[0]
        limit = pages if self.calls <= self.full_runs else pages + 10_000
        self.store._db.execute(f"PRAGMA max_page_count = {limit}")
        return BIG_RESULT


def _statuses(runner: LocalJobRunner, job_id: str, seconds: float) -> list[tuple[str, int, str | None]]:
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = runner.get(job_id)
        seen.append((job.status.value, job.attempts, job.error_code))
        if job.status.terminal:
            break
        time.sleep(0.02)
    return seen


def test_a_result_that_does_not_fit_is_retried_then_saved(tmp_path):
    store = SQLiteJobStore(tmp_path)
    job = new_job({})
    store.create(job, CLIP)
    task = FillsTheStore(store, full_runs=1)
    runner = LocalJobRunner(store, task, poll=0.05, max_attempts=3).start()
    try:
        seen = _statuses(runner, job.id, 20)
        final = store.get(job.id)
    finally:
        runner.close()
    assert final.status.value == "done" and final.result == BIG_RESULT and final.attempts == 2, seen
    assert task.calls == 2
    assert ("queued", 1, "RESULT_NOT_SAVED") in seen or any(s[1] == 2 for s in seen), seen


def test_a_result_that_never_fits_fails_the_job_with_a_clear_error(tmp_path):
    store = SQLiteJobStore(tmp_path)
    job = new_job({})
    store.create(job, CLIP)
    runner = LocalJobRunner(store, FillsTheStore(store, full_runs=99), poll=0.05, max_attempts=2).start()
    try:
        failed = wait_for(lambda: (j := runner.get(job.id)) and j.status.terminal and j, what="job ended")
        audio = store.audio(job.id)
    finally:
        runner.close()
    assert failed.status.value == "failed" and failed.error_code == "RESULT_NOT_SAVED", failed
    assert failed.attempts == 2 and failed.owner is None
    assert "could not be saved" in failed.error and "job store is full" in failed.error
    assert "free space in JOB_DIR" in failed.error
    assert audio is None  # the recording of a failed job is removed: it frees space


class NoWritesFor(SQLiteJobStore):
    """A store whose result and failure writes all fail (disk full) until ``until``."""

    until = 0.0

    def finish(self, job_id, owner, result):
        self._full()
        return super().finish(job_id, owner, result)

    def fail(self, job_id, owner, error, error_code, *, retry, max_attempts):
        self._full()
        return super().fail(job_id, owner, error, error_code, retry=retry, max_attempts=max_attempts)

    def _full(self) -> None:
        if time.monotonic() < self.until:
            raise sqlite3.OperationalError("database or disk is full")


def test_an_outcome_that_cannot_be_written_at_all_is_saved_once_the_store_takes_writes(tmp_path):
    store = NoWritesFor(tmp_path)
    job = new_job({})
    store.create(job, CLIP)
    calls = []

    def task(audio, options, progress):
        calls.append(time.monotonic())
        if len(calls) == 1:
            store.until = time.monotonic() + 1.0  # the disk fills while the job runs
        return {"ok": True}

    runner = LocalJobRunner(store, task, poll=0.05, max_attempts=3).start()
    try:
        seen = _statuses(runner, job.id, 20)
        final = store.get(job.id)
    finally:
        runner.close()
    # Running while nothing at all could be written; then queued with RESULT_NOT_SAVED, run
    # again and saved, without a restart.
    assert final.status.value == "done" and final.result == {"ok": True} and final.attempts == 2, seen
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0
