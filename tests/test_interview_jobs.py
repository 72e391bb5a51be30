"""A generated 10-minute interview, as M4A, through ``/jobs`` on both backends with the bundled model.

The recording has known answers: speech-like bursts at a known pitch per answer, known pauses
inside answers, silences between them, and the last answers 6 dB louder. Both the local backend
(SQLite store, worker threads) and a real Celery worker with a real Redis on loopback must give
those figures within the tolerances below and a complete timeline.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

import numpy as np
import pytest

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.http.app import create_app

from .signals import voice_like
from .test_audio import pyav_encode
from .test_jobs import poll
from .test_jobs_celery import celery_worker
from .test_production import redis_url  # noqa: F401  (a fixture: a private redis-server)

RATE = 16_000
BURST = 2.5  # seconds of speech per burst
BURSTS = 7  # per answer
BETWEEN = 6.0  # seconds of silence between answers (the interviewer's question)
ANSWERS = 20
LOUD_FROM = 16  # answers 16-20 are twice as loud (+6 dB)
VAD = "energy"  # the bursts are harmonic tones, not speech: the silero VAD rightly finds none


@dataclass(frozen=True)
class Answer:
    start: float
    end: float
    f0: float
    pause: float
    gain: float


def quiet(seconds: float, seed: int) -> np.ndarray:
    return (1e-4 * np.random.default_rng(seed).standard_normal(int(round(seconds * RATE)))).astype(np.float32)


def ten_minute_interview() -> tuple[np.ndarray, list[Answer]]:
    """20 answers of 7 bursts; pitch 110-205 Hz by answer; pauses 0.8 s, or 2.0 s in answers 6-10."""
    parts, answers, t = [quiet(BETWEEN, 0)], [], BETWEEN
    for n in range(1, ANSWERS + 1):
        f0, pause = 105.0 + 5 * n, 2.0 if 6 <= n <= 10 else 0.8
        gain = 2.0 if n >= LOUD_FROM else 1.0
        start = t
        for burst in range(BURSTS):
            parts.append(gain * voice_like(BURST, f0=f0, seed=100 * n + burst))
            t += BURST
            if burst < BURSTS - 1:
                parts.append(quiet(pause, seed=burst))
                t += pause
        answers.append(Answer(start, t, f0, pause, gain))
        parts.append(quiet(BETWEEN, seed=n))
        t += BETWEEN
    return np.concatenate(parts), answers


@pytest.fixture(scope="module")
def recording() -> tuple[bytes, list[Answer], float]:
    signal, answers = ten_minute_interview()
    return pyav_encode(signal, RATE, "ipod", "aac"), answers, len(signal) / RATE


def submit(client, recording) -> dict:
    audio, answers, _ = recording
    ranges = [{"start": a.start - 0.5, "end": a.end + 0.5, "label": f"Q{i}"} for i, a in enumerate(answers, 1)]
    # As JSON: the test client would spool a large multipart body to a temporary file of its own.
    body = {"audio_data": base64.b64encode(audio).decode(), "lang": "en", "options": {"ranges": ranges}}
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.get_json()
    data = poll(client, response.get_json()["data"]["job_id"], timeout=240)
    assert data["status"] == "done", data
    return data["result"]


def check_known_figures(result: dict, answers: list[Answer], duration: float) -> None:
    assert 590 < duration < 650
    assert result["basic_info"]["format"] in ("m4a", "mp4", "aac")
    assert result["basic_info"]["duration"] == pytest.approx(duration, abs=0.1)

    # Session delivery: speaking time within 8% of the bursts' total (their fades count as pauses).
    session = result["delivery"]
    speech = ANSWERS * BURSTS * BURST
    assert session["speaking_time"] == pytest.approx(speech, rel=0.08)
    assert session["speaking_ratio"] == pytest.approx(speech / duration, rel=0.08)

    # Per answer: the known pauses, pitch and loudness.
    questions = result["questions"]
    assert [q["label"] for q in questions] == [f"Q{i}" for i in range(1, ANSWERS + 1)]
    quiet_loudness = []
    loud_loudness = []
    for q, answer in zip(questions, answers, strict=True):
        d = q["delivery"]
        assert d["pause_count"] == BURSTS - 1, (q["label"], d)
        assert d["mean_pause"] == pytest.approx(answer.pause, abs=0.25), (q["label"], d)
        semitones = 12 * np.log2(d["pitch_median_hz"] / answer.f0)
        assert abs(semitones) < 0.75, (q["label"], d["pitch_median_hz"], answer.f0)
        (loud_loudness if answer.gain > 1 else quiet_loudness).append(d["loudness_db"])
    step = np.median(loud_loudness) - np.median(quiet_loudness)
    assert step == pytest.approx(20 * np.log10(2.0), abs=1.5)

    # The long pauses of answers 6-10 are what the advice cites.
    long_pauses = [r for r in result["assessment"]["recommendations"] if r["code"] == "long_pauses_q"]
    assert long_pauses and long_pauses[0]["evidence"]["answers"] == [6, 7, 8, 9, 10]

    # Timeline: ordered, inside the recording, every burst covered, each entry complete.
    timeline = result["timeline"]
    assert all(a["end"] <= b["start"] for a, b in zip(timeline, timeline[1:], strict=False))
    assert timeline[0]["start"] >= 0 and timeline[-1]["end"] <= duration
    for answer in answers:
        for burst in range(BURSTS):
            middle = answer.start + burst * (BURST + answer.pause) + BURST / 2
            assert any(e["start"] <= middle <= e["end"] for e in timeline), (answer, burst)
    for entry in timeline:
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert entry["emotion_label"] in entry["probabilities"]
        assert 0 <= entry["valence"] <= 1 and 0 <= entry["arousal"] <= 1
        assert entry["delivery"]["speaking_time"] > 0
        assert 1 <= entry["question"] <= ANSWERS


@pytest.fixture(scope="module")
def bundled() -> SpeechEmotionAnalyzer:
    return SpeechEmotionAnalyzer()  # the shipped model, the embedded default


def test_local_backend(settings, bundled, recording, tmp_path):
    job_settings = replace(
        settings, job_dir=str(tmp_path / "jobs"), rate_limits="off", max_upload_mb=25, max_request_mb=64, vad=VAD
    )
    app = create_app(job_settings, bundled)
    try:
        result = submit(app.test_client(), recording)
    finally:
        app.extensions["emotion_jobs"].close()
    check_known_figures(result, recording[1], recording[2])
    assert result["basic_info"]["models_count"] == 1


def test_celery_backend(settings, bundled, recording, redis_url, tmp_path, monkeypatch):  # noqa: F811
    url, _ = redis_url
    monkeypatch.setenv("VAD", VAD)  # the worker reads its own settings
    job_settings = replace(
        settings, job_backend="celery", celery_broker_url=url, rate_limits="off", max_upload_mb=25, max_request_mb=64
    )
    app = create_app(job_settings, bundled)
    try:
        # No test task: the worker loads the embedded default preset (the bundled model) itself.
        with celery_worker(url, "", tmp_path / "runs.log", "interview"):
            result = submit(app.test_client(), recording)
    finally:
        app.extensions["emotion_jobs"].close()
    check_known_figures(result, recording[1], recording[2])
