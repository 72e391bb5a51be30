"""The real entry points, served for real on loopback, checked by test_api.py."""

from __future__ import annotations

import base64

import requests

import test_api

from .server import free_port, running
from .signals import wav


def test_start_api_server_passes_test_api():
    port = free_port()
    with running(["start_api_server.py"], port) as (url, process):
        checker = test_api.run(url, timeout=60)
        assert checker.failures == [], checker.failures
        assert checker.passed >= 20
    output = process.output
    assert f"http://127.0.0.1:{port}" in output
    assert "model encoder_default" in output  # the default preset: Whisper encoder + head, offline


def test_gunicorn_emotion_api_app():
    port = free_port()
    with running(["-m", "gunicorn", "emotion_api:app"], port, ready=("healthy",)) as (url, _):
        health = requests.get(url + "/health", timeout=10).json()
        assert health["data"]["available_models"] == ["encoder_default"]
        body = requests.post(
            url + "/analyze", json={"audio_data": base64.b64encode(wav(2.0)).decode()}, timeout=60
        ).json()
        assert body["success"] and body["data"]["basic_info"]["models_count"] == 1


def test_python_emotion_api_serves():
    port = free_port()
    with running(["emotion_api.py"], port, ready=("healthy",)) as (url, _):
        assert requests.get(url + "/health", timeout=10).json()["success"] is True


def test_test_api_fails_against_a_broken_server():
    """test_api.py must be able to fail: a preset whose models cannot load gives a non-zero exit."""
    port = free_port()
    env = {"MODEL_PRESET": "full"}  # no network here: none of the hub models can load
    with running(["start_api_server.py"], port, env=env, timeout=180) as (url, _):
        health = requests.get(url + "/health", timeout=10)
        assert health.status_code == 503
        data = health.json()["data"]
        assert data["status"] == "unhealthy"
        assert {f["name"] for f in data["failed_models"]} == {"exhubert", "hubert_large", "wav2vec2_xlsr"}
        assert all(f["reason"] for f in data["failed_models"])
        assert test_api.main(["--url", url, "--timeout", "30"]) == 1
