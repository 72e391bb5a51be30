"""JOB_BACKEND=celery: the same /jobs API through a real Redis and real Celery workers on loopback.

Needs redis-server (``apt-get install -y redis-server``); the tests fail, never skip, without it.
The workers run test tasks (``EMOTION_TEST_JOB_TASK``, see :mod:`tests.jobs_tasks`), not models.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from emotion_service.celery_app import TEST_TASK_ENV
from emotion_service.http.app import create_app

from .server import ROOT, stop
from .signals import wav
from .test_jobs import poll, wait_for
from .test_production import redis_url  # noqa: F401  (a fixture: a private redis-server)

CLIP = wav(3.0)
VISIBILITY_TIMEOUT = 6  # seconds before a dead worker's job is handed out again


@contextlib.contextmanager
def celery_worker(broker: str, task: str, log: Path, name: str) -> Iterator[subprocess.Popen]:
    """A real Celery worker (prefork, one process) running ``task``, until it reports ready."""
    env = {
        **os.environ,
        "JOB_BACKEND": "celery",
        "CELERY_BROKER_URL": broker,
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "JOB_MAX_ATTEMPTS": "3",
        TEST_TASK_ENV: task,
        "EMOTION_TEST_JOB_LOG": str(log),
    }
    output = log.with_name(f"{name}.out")
    with open(output, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "emotion_service.celery_app", "worker", "--pool=prefork", "-c", "1",
             "--loglevel=info", "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: process.poll() is not None or "ready." in output.read_text(), 60, f"worker {name} to start")
        if process.poll() is not None:
            raise AssertionError(f"celery worker exited with {process.returncode}:\n{output.read_text()}")
        yield process
    finally:
        stop(process, timeout=15)


@pytest.fixture
def celery_app(settings, analyzer, redis_url):  # noqa: F811
    url, _ = redis_url
    app = create_app(replace(settings, job_backend="celery", celery_broker_url=url, rate_limits="off"), analyzer)
    yield app
    app.extensions["emotion_jobs"].close()


def events(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_jobs_run_on_a_celery_worker(celery_app, redis_url, tmp_path):  # noqa: F811
    url, _ = redis_url
    client = celery_app.test_client()
    log = tmp_path / "runs.log"
    with celery_worker(url, "tests.jobs_tasks:standin_interview", log, "w1"):
        response = client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav"), "lang": "en"})
        assert response.status_code == 202, response.get_json()
        job_id = response.get_json()["data"]["job_id"]
        data = poll(client, job_id, timeout=60)
        assert data["status"] == "done" and data["progress"] == 100.0 and data["attempts"] == 1, data
        assert data["result"]["basic_info"]["duration"] == pytest.approx(3.0, abs=0.01)
        assert data["result"]["timeline"]
        store = celery_app.extensions["emotion_jobs"].backend.store
        assert store.audio(job_id) is None  # the recording left Redis when the job ended
        assert store.redis.ttl(f"emotion-jobs:job:{job_id}") > 0  # the result expires (JOB_RETENTION_HOURS)

        bad = client.post("/jobs", data={"audio": (io.BytesIO(CLIP[:12] + b"not audio" * 50), "a.wav")})
        failed = poll(client, bad.get_json()["data"]["job_id"], timeout=60)
        assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["error"]["error_code"]

    assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert client.get(f"/jobs/{job_id}").get_json()["error_code"] == "JOB_NOT_FOUND"
    assert store.redis.keys(f"emotion-jobs:*{job_id}") == []
    assert events(log) == ["start", "end", "start"]  # the bad recording started, and failed


def test_a_queued_job_deleted_before_a_worker_runs_it_is_never_run(celery_app, redis_url, tmp_path):  # noqa: F811
    url, _ = redis_url
    client = celery_app.test_client()
    job_id = client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav")}).get_json()["data"]["job_id"]
    store = celery_app.extensions["emotion_jobs"].backend.store
    assert store.audio(job_id) == CLIP
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert store.audio(job_id) is None
    log = tmp_path / "runs.log"
    with celery_worker(url, "tests.jobs_tasks:slow", log, "w1"):
        time.sleep(1.5)  # the worker takes the message and finds no job
    assert events(log) == []


def test_a_worker_killed_mid_job_has_its_job_retried_by_another(celery_app, redis_url, tmp_path):  # noqa: F811
    url, _ = redis_url
    client = celery_app.test_client()
    log = tmp_path / "runs.log"
    with celery_worker(url, "tests.jobs_tasks:slow", log, "doomed") as doomed:
        job_id = client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav")}).get_json()["data"]["job_id"]
        wait_for(lambda: client.get(f"/jobs/{job_id}").get_json()["data"]["progress"] > 0, 30, "the job to start", 0.1)
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool process, mid-job
        doomed.wait()
    assert client.get(f"/jobs/{job_id}").get_json()["data"]["status"] == "running"
    with celery_worker(url, "tests.jobs_tasks:slow", log, "rescuer"):
        data = poll(client, job_id, timeout=VISIBILITY_TIMEOUT + 40)
    assert data["status"] == "done" and data["result"] == {"bytes": len(CLIP)}
    assert data["attempts"] == 2
    assert events(log) == ["start", "start", "end"]  # started twice, finished once
