"""Asynchronous jobs on the local backend: the HTTP API, the SQLite store and restarts."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from dataclasses import replace

import pytest

from emotion_service.errors import InvalidAudio
from emotion_service.http.app import create_app
from emotion_service.http.jobs import JobAccepted, JobData, JobDeleted
from emotion_service.http.schemas import Envelope
from emotion_service.jobs.store import HOST, LocalJobRunner, SQLiteJobStore, new_job

from .signals import wav

CLIP = wav(3.0)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def job_settings(settings, tmp_path):
    return replace(settings, job_dir=str(tmp_path / "jobs"), job_max_attempts=3, rate_limits="off")


@pytest.fixture
def jobs_app(job_settings, analyzer):
    app = create_app(job_settings, analyzer)
    yield app
    app.extensions["emotion_jobs"].close()


@pytest.fixture
def jobs_client(jobs_app):
    return jobs_app.test_client()


def audio_files(settings) -> list[str]:
    directory = os.path.join(settings.job_dir, "audio")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def poll(client, job_id: str, until=("done", "failed"), timeout: float = 30.0) -> dict:
    def ended():
        body = client.get(f"/jobs/{job_id}").get_json()
        assert body["success"], body
        return body["data"] if body["data"]["status"] in until else None

    return wait_for(ended, timeout, f"job {job_id} to reach {until}", interval=0.1)


class Gate:
    """A task that reports progress and waits for the test to let it go on."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.started = threading.Event()
        self.calls = 0

    def __call__(self, audio, options, progress):
        self.calls += 1
        self.started.set()
        for step in range(1, 5):
            progress(step / 5)
            time.sleep(0.15)
        assert self.go.wait(20)
        return {"bytes": len(audio), "options": options}


def test_submit_poll_done_with_the_interview_result(jobs_client, job_settings):
    response = jobs_client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "answer.wav"), "lang": "en"})
    assert response.status_code == 202, response.get_json()
    body = Envelope.model_validate(response.get_json())
    accepted = JobAccepted.model_validate(body.data)
    assert response.headers["Location"] == accepted.status_url == f"/jobs/{accepted.job_id}"
    data = poll(jobs_client, accepted.job_id)
    JobData.model_validate(data)
    assert data["status"] == "done", data
    assert data["progress"] == 100.0 and data["attempts"] == 1
    assert data["result"]["basic_info"]["duration"] == pytest.approx(3.0, abs=0.01)
    assert data["result"]["timeline"], data["result"]
    assert data["created_at"].endswith("Z") and data["updated_at"] >= data["created_at"]
    assert audio_files(job_settings) == []  # the recording is gone once the job is done


def test_json_submission_with_options(jobs_app, jobs_client):
    gate = Gate()
    gate.go.set()
    jobs_app.extensions["emotion_jobs"].task = gate
    body = {"audio_data": base64.b64encode(CLIP).decode(), "lang": "en", "options": {"speech_lang": "en"}}
    job_id = jobs_client.post("/jobs", json=body).get_json()["data"]["job_id"]
    data = poll(jobs_client, job_id)
    assert data["result"]["options"] == {"speech_lang": "en", "lang": "en", "max_seconds": 7200.0}


@pytest.mark.parametrize(
    "options,code",
    [('{"nope": 1}', "INVALID_OPTIONS"), ("[1]", "INVALID_OPTIONS"), ("{bad json", "INVALID_OPTIONS"),
     ('{"speech_lang": "fr"}', "INVALID_OPTIONS"), ('{"ranges": [[5, 1]]}', "INVALID_RANGES")],
)  # fmt: skip
def test_bad_options_are_refused_at_submission(jobs_client, job_settings, options, code):
    response = jobs_client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav"), "options": options})
    assert response.status_code == 400 and response.get_json()["error_code"] == code, response.get_json()
    assert audio_files(job_settings) == []


def test_missing_audio_is_refused(jobs_client):
    response = jobs_client.post("/jobs", json={"lang": "en"})
    assert response.status_code == 400 and response.get_json()["error_code"] == "MISSING_AUDIO"


def test_progress_increases_while_running(jobs_app, jobs_client):
    gate = Gate()
    jobs_app.extensions["emotion_jobs"].task = gate
    job_id = jobs_client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav")}).get_json()["data"]["job_id"]
    seen = []
    assert gate.started.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not seen or seen[-1] < 80):
        data = jobs_client.get(f"/jobs/{job_id}").get_json()["data"]
        assert data["status"] == "running"
        seen.append(data["progress"])
        time.sleep(0.05)
    gate.go.set()
    assert poll(jobs_client, job_id)["progress"] == 100.0
    assert seen == sorted(seen) and seen[-1] >= 80 and len(set(seen)) >= 2, seen


def test_delete_removes_result_and_audio(jobs_app, jobs_client, job_settings):
    gate = Gate()
    jobs_app.extensions["emotion_jobs"].task = gate
    running = jobs_client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav")}).get_json()["data"]["job_id"]
    assert gate.started.wait(10)
    queued = jobs_client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "b.wav")}).get_json()["data"]["job_id"]
    assert audio_files(job_settings) == sorted([running, queued])  # stored only while the jobs wait or run
    for job_id in (queued, running):
        response = jobs_client.delete(f"/jobs/{job_id}")
        assert response.status_code == 200
        JobDeleted.model_validate(response.get_json()["data"])
        gone = jobs_client.get(f"/jobs/{job_id}")
        assert gone.status_code == 404 and gone.get_json()["error_code"] == "JOB_NOT_FOUND"
        assert jobs_client.delete(f"/jobs/{job_id}").status_code == 404
    assert audio_files(job_settings) == []
    gate.go.set()
    time.sleep(0.5)  # the deleted running job's run ends without bringing its result back
    assert jobs_client.get(f"/jobs/{running}").status_code == 404
    assert gate.calls == 1  # the deleted queued job never ran

    # A finished job: DELETE removes its result.
    done = jobs_client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "c.wav")}).get_json()["data"]["job_id"]
    assert poll(jobs_client, done)["status"] == "done"
    assert jobs_client.delete(f"/jobs/{done}").status_code == 200
    assert jobs_client.get(f"/jobs/{done}").status_code == 404
    store = SQLiteJobStore(job_settings.job_dir)
    assert store.get(done) is None and audio_files(job_settings) == []
    store.close()


@pytest.mark.parametrize("job_id", ["nothex", "../../etc/passwd", "0" * 31, "A" * 32, "0" * 33])
def test_malformed_and_unknown_ids_are_404(jobs_client, job_id):
    for method in (jobs_client.get, jobs_client.delete):
        response = method(f"/jobs/{job_id}")
        assert response.status_code == 404
        assert response.get_json()["error_code"] in ("JOB_NOT_FOUND", "NOT_FOUND")
    unknown = jobs_client.get("/jobs/" + "0" * 32)
    assert unknown.status_code == 404 and unknown.get_json()["error_code"] == "JOB_NOT_FOUND"


CORRUPT_WAV = CLIP[:12] + b"not audio at all" * 100  # a WAV header, then nothing decodable


@pytest.mark.parametrize(("audio", "code"), [(b"", "EMPTY_AUDIO"), (b"not audio at all" * 100, "UNSUPPORTED_FORMAT")])
def test_what_is_not_audio_at_all_is_refused_at_submission(jobs_client, job_settings, audio, code):
    response = jobs_client.post("/jobs", data={"audio": (io.BytesIO(audio), "a.wav")})
    assert response.status_code == 400 and response.get_json()["error_code"] == code
    assert audio_files(job_settings) == []


def test_undecodable_audio_fails_the_job_at_once(jobs_client, job_settings):
    job_id = jobs_client.post("/jobs", data={"audio": (io.BytesIO(CORRUPT_WAV), "a.wav")})
    data = poll(jobs_client, job_id.get_json()["data"]["job_id"])
    assert data["status"] == "failed" and data["attempts"] == 1  # the same bytes would fail again: no retry
    assert data["error"]["error_code"] == "CORRUPT_AUDIO" and data["error"]["message"]
    assert "result" not in data
    assert audio_files(job_settings) == []


def test_too_many_batch_segments_points_to_jobs(client):
    segments = [base64.b64encode(CLIP).decode()] * 6
    response = client.post("/batch_analyze", json={"audio_segments": segments})
    assert response.status_code == 400 and "/jobs" in response.get_json()["message"]


# -- the store and the runner, across restarts ---------------------------------------------------------


class Counting:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, audio, options, progress):
        self.calls += 1
        progress(0.5)
        if self.fail:
            raise RuntimeError("model exploded")
        return {"n": self.calls}


def dead_owner() -> str:
    """The owner of a runner whose process is gone (pid numbers above pid_max are never alive)."""
    return f"{HOST}:99999999:oldrun"


def test_restart_requeues_a_running_job_and_runs_it_once(tmp_path):
    store = SQLiteJobStore(tmp_path)
    job = new_job({"lang": "en"})
    store.create(job, CLIP)
    assert store.claim_next(dead_owner()).status.value == "running"  # the process died mid-job
    store.close()

    task = Counting()
    runner = LocalJobRunner(SQLiteJobStore(tmp_path), task, poll=0.05).start()
    try:
        done = wait_for(lambda: (j := runner.get(job.id)) and j.status.value == "done" and j, what="job done")
        assert done.result == {"n": 1} and done.attempts == 2
        time.sleep(0.3)
        assert task.calls == 1
        assert os.listdir(tmp_path / "audio") == []
    finally:
        runner.close()

    again = Counting()
    runner = LocalJobRunner(SQLiteJobStore(tmp_path), again, poll=0.05).start()  # a done job is never re-run
    try:
        time.sleep(0.3)
        assert again.calls == 0 and runner.get(job.id).result == {"n": 1}
    finally:
        runner.close()


def test_queued_jobs_survive_a_restart(tmp_path):
    store = SQLiteJobStore(tmp_path)
    jobs = [new_job({}) for _ in range(3)]
    for job in jobs:
        store.create(job, CLIP)
    store.close()
    task = Counting()
    runner = LocalJobRunner(SQLiteJobStore(tmp_path), task, workers=2, poll=0.05).start()
    try:
        for job in jobs:
            wait_for(lambda job=job: runner.get(job.id).status.value == "done", what="job done")
        assert task.calls == 3
    finally:
        runner.close()


def test_a_job_that_always_fails_ends_failed_after_max_attempts(tmp_path):
    task = Counting(fail=True)
    runner = LocalJobRunner(SQLiteJobStore(tmp_path), task, max_attempts=3, poll=0.05).start()
    try:
        job = runner.submit(CLIP, {})
        failed = wait_for(lambda: (j := runner.get(job.id)) and j.status.value == "failed" and j, what="job failed")
        assert task.calls == 3 and failed.attempts == 3
        assert failed.error_code == "JOB_ERROR" and "model exploded" in failed.error
        assert failed.result is None and os.listdir(tmp_path / "audio") == []
    finally:
        runner.close()


def test_a_job_interrupted_too_often_is_failed_at_restart(tmp_path):
    store = SQLiteJobStore(tmp_path)
    job = new_job({})
    store.create(job, CLIP)
    store.claim_next(dead_owner())
    assert store.recover(lambda owner, age: False, max_attempts=2) == []  # queued again: attempt 1 of 2
    assert store.claim_next(dead_owner()).attempts == 2  # and interrupted again
    store.close()
    task = Counting()
    ended = []
    runner = LocalJobRunner(SQLiteJobStore(tmp_path), task, max_attempts=2, notify=ended.append, poll=0.05).start()
    try:
        failed = runner.get(job.id)
        assert failed.status.value == "failed" and failed.error_code == "JOB_INTERRUPTED"
        assert "JOB_MAX_ATTEMPTS" in failed.error and [j.id for j in ended] == [job.id]
        assert task.calls == 0 and os.listdir(tmp_path / "audio") == []
    finally:
        runner.close()


def test_a_live_runners_job_is_not_taken_over(tmp_path):
    store = SQLiteJobStore(tmp_path)
    job = new_job({})
    store.create(job, CLIP)
    sibling = f"{HOST}:{os.getppid()}:sibling"  # another live process on this machine, heartbeat fresh
    store.claim_next(sibling)
    store.close()
    task = Counting()
    runner = LocalJobRunner(SQLiteJobStore(tmp_path), task, poll=0.05).start()
    try:
        time.sleep(0.3)
        assert task.calls == 0 and runner.get(job.id).status.value == "running"
    finally:
        runner.close()


def test_failed_service_errors_are_not_retried(tmp_path):
    def bad_audio(audio, options, progress):
        raise InvalidAudio("The audio is silent; record again.", error_code="SILENT_AUDIO")

    runner = LocalJobRunner(SQLiteJobStore(tmp_path), bad_audio, poll=0.05).start()
    try:
        job = runner.submit(CLIP, {})
        failed = wait_for(lambda: (j := runner.get(job.id)) and j.status.value == "failed" and j, what="job failed")
        assert failed.attempts == 1 and failed.error_code == "SILENT_AUDIO"
    finally:
        runner.close()


def test_finished_jobs_past_retention_are_deleted(tmp_path):
    runner = LocalJobRunner(SQLiteJobStore(tmp_path), Counting(), retention=0.2, poll=0.05).start()
    try:
        job = runner.submit(CLIP, {})
        wait_for(lambda: runner.get(job.id).status.value == "done", what="job done")
        time.sleep(0.3)
        (tmp_path / "audio" / ("f" * 32)).write_bytes(b"left behind by a crash")
        runner.housekeeping()
        assert runner.get(job.id) is None and os.listdir(tmp_path / "audio") == []
    finally:
        runner.close()


def test_an_app_with_an_existing_store_resumes_jobs_without_a_request(job_settings, analyzer):
    store = SQLiteJobStore(job_settings.job_dir)
    job = new_job({"lang": "en", "max_seconds": 60})
    store.create(job, CLIP)
    store.close()
    app = create_app(job_settings, analyzer)
    try:
        backend = app.extensions["emotion_jobs"]._backend
        assert backend is not None  # opened at once: the store existed
        wait_for(lambda: backend.get(job.id).status.value == "done", what="job done")
    finally:
        app.extensions["emotion_jobs"].close()


def test_an_app_without_jobs_creates_no_job_directory(job_settings, analyzer):
    app = create_app(job_settings, analyzer)
    app.test_client().get("/health")
    assert not os.path.exists(job_settings.job_dir)
    assert app.extensions["emotion_jobs"]._backend is None
