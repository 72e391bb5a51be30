"""The HTTP contract of the spec, through Flask's test client with stand-in models."""

from __future__ import annotations

import base64
import io
import json
import re
import tempfile

import numpy as np
import pytest

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.config import Settings
from emotion_service.http.app import create_app
from emotion_service.labels import CANONICAL_LABELS

from .conftest import StandInModel
from .signals import encode, voice_like, wav

CLIP = wav(2.0)
CLIP_B64 = base64.b64encode(CLIP).decode()


def envelope(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["success"] is (status < 400)
    assert isinstance(body["message"], str) and body["message"]
    if status >= 400:
        assert body["error_code"]
    return body


def test_health_lists_models(client):
    body = envelope(client.get("/health"), 200)
    assert body["message"] == "服务运行正常"
    data = body["data"]
    assert data["status"] == "healthy"
    assert data["models_loaded"] == 2
    assert data["available_models"] == ["standin", "four"]
    assert {m["name"] for m in data["models"]} == {"standin", "four"}
    assert {m["dtype"] for m in data["models"]} == {"fp32"}  # models that do not say run fp32


def test_analyze_upload_matches_spec_fields(client):
    data = envelope(client.post("/analyze", data={"audio": (io.BytesIO(CLIP), "a.wav")}), 200)["data"]
    assert set(data) >= {"basic_info", "models_results", "final_result", "interview_assessment"}
    assert data["basic_info"]["sample_rate"] == 16000
    assert data["basic_info"]["duration"] == pytest.approx(2.0, abs=0.01)
    assert data["basic_info"]["models_count"] == 2
    final = data["final_result"]
    assert set(final) >= {"recommended_emotion", "confidence", "best_model", "average_confidence", "models_consensus"}
    assert final["recommended_emotion_label"] in CANONICAL_LABELS
    assert final["recommended_emotion"] != final["recommended_emotion_label"]  # Chinese by default
    assert sum(final["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert final["best_model"] in {"Standin", "Four"}
    assessment = data["interview_assessment"]
    assert assessment["confidence_level"] in {"高", "中", "低"}
    assert 0 <= assessment["score"] <= 100
    four = next(r for r in data["models_results"] if r["model"] == "four")
    assert set(four["probabilities"]) == {"neutral", "happy", "angry", "sad"}
    assert four["arousal"] is not None


def test_base64_and_upload_give_the_same_result(client):
    upload = envelope(client.post("/analyze", data={"audio": (io.BytesIO(CLIP), "a.wav")}), 200)["data"]
    plain = envelope(client.post("/analyze", json={"audio_data": CLIP_B64}), 200)["data"]
    prefixed = envelope(client.post("/analyze", json={"audio_data": "data:audio/wav;base64," + CLIP_B64}), 200)["data"]
    raw = envelope(client.post("/analyze", data=CLIP, content_type="audio/wav"), 200)["data"]
    for other in (plain, prefixed, raw):
        assert other["final_result"] == upload["final_result"]


def test_english(client):
    data = envelope(client.post("/analyze?lang=en", json={"audio_data": CLIP_B64}), 200)["data"]
    assert data["final_result"]["recommended_emotion"] == data["final_result"]["recommended_emotion_label"]
    assert data["interview_assessment"]["confidence_level"] in {"high", "medium", "low"}
    assert all(r.isascii() for r in data["interview_assessment"]["recommendations"])
    data = envelope(client.post("/analyze", json={"audio_data": CLIP_B64, "lang": "en"}), 200)["data"]
    assert data["interview_assessment"]["confidence_level"] in {"high", "medium", "low"}


def test_batch_session_summary(client, analyzer):
    segments = [base64.b64encode(wav(1.5, f0, seed=i)).decode() for i, f0 in enumerate((110, 170, 230))]
    data = envelope(client.post("/batch_analyze", json={"audio_segments": segments}), 200)["data"]
    assert [r["index"] for r in data["results"]] == [0, 1, 2]
    assert all(r["success"] for r in data["results"])
    summary = data["session_summary"]
    assert summary["segments_analyzed"] == 3
    assert summary["total_duration"] == pytest.approx(4.5, abs=0.01)
    assert sum(summary["emotion_distribution"].values()) == pytest.approx(1, abs=1e-3)
    assert summary["dominant_emotion_label"] in CANONICAL_LABELS
    assert 0 <= summary["stability"]["score"] <= 1
    assert summary["recommendations"]
    # The session's clips reach the models together, flagged as one speaker.
    assert analyzer.models["standin"].calls[-1] == (3, True)


def test_batch_keeps_indices_around_bad_segments(client):
    segments = [
        CLIP_B64,
        "@@@",
        {"audio_data": CLIP_B64},
        42,
        base64.b64encode(encode(np.zeros(16000, np.float32))).decode(),
    ]
    data = envelope(client.post("/batch_analyze", json={"audio_segments": segments}), 200)["data"]
    assert [r["success"] for r in data["results"]] == [True, False, True, False, False]
    assert [r["index"] for r in data["results"]] == [0, 1, 2, 3, 4]
    assert data["results"][1]["error_code"] == "INVALID_BASE64"
    assert data["results"][3]["error_code"] == "INVALID_AUDIO_DATA"
    assert data["results"][4]["error_code"] == "SILENT_AUDIO"
    assert data["segments_failed"] == 3
    assert data["session_summary"]["segments_analyzed"] == 2


def test_batch_multipart_files(client):
    files = {"audio": [(io.BytesIO(wav(1.0, 150, seed=1)), "a.wav"), (io.BytesIO(wav(1.0, 200, seed=2)), "b.wav")]}
    data = envelope(client.post("/batch_analyze", data=files), 200)["data"]
    assert data["session_summary"]["segments_analyzed"] == 2


def _multipart(field: str, filename: str, data: bytes) -> dict:
    """A multipart body built here: werkzeug's test client spools big ones to a file it never closes."""
    boundary = "----emotion-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return dict(data=body, content_type=f"multipart/form-data; boundary={boundary}")


def _big_b64() -> str:
    return base64.b64encode(b"\0" * 2_100_000).decode()


# (name, request kwargs, method, path, status, error_code) — each a different way to get it wrong.
BAD_INPUTS = [
    ("empty upload", dict(data={"audio": (io.BytesIO(b""), "a.wav")}), "/analyze", 400, "EMPTY_AUDIO"),
    ("wrong multipart field", dict(data={"file": (io.BytesIO(CLIP), "a.wav")}), "/analyze", 400, "MISSING_AUDIO"),
    ("multipart with no parts", dict(data={}, content_type="multipart/form-data"), "/analyze", 400, "MISSING_AUDIO"),
    ("text file", dict(data={"audio": (io.BytesIO(b"hello " * 200), "a.wav")}), "/analyze", 400, "UNSUPPORTED_FORMAT"),
    (
        "PNG image",
        dict(data={"audio": (io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(500)), "a.png")}),
        "/analyze",
        400,
        "UNSUPPORTED_FORMAT",
    ),
    ("truncated WAV", dict(data={"audio": (io.BytesIO(CLIP[:50]), "a.wav")}), "/analyze", 400, None),
    (
        "random bytes",
        dict(data={"audio": (io.BytesIO(np.random.default_rng(0).bytes(4000)), "a.bin")}),
        "/analyze",
        400,
        None,
    ),
    ("invalid base64", dict(json={"audio_data": "%%%%"}), "/analyze", 400, "INVALID_BASE64"),
    (
        "base64 of garbage",
        dict(json={"audio_data": base64.b64encode(b"garbage" * 50).decode()}),
        "/analyze",
        400,
        "UNSUPPORTED_FORMAT",
    ),
    ("audio_data not a string", dict(json={"audio_data": 123}), "/analyze", 400, "INVALID_AUDIO_DATA"),
    ("audio_data missing", dict(json={"audio": CLIP_B64}), "/analyze", 400, "MISSING_AUDIO"),
    ("JSON is a list", dict(json=[CLIP_B64]), "/analyze", 400, "INVALID_JSON"),
    ("malformed JSON", dict(data=b"{nope", content_type="application/json"), "/analyze", 400, "INVALID_JSON"),
    ("empty body", dict(data=b"", content_type="application/json"), "/analyze", 400, "INVALID_JSON"),
    ("text/plain body", dict(data=b"hello", content_type="text/plain"), "/analyze", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("no content type", dict(data=b"hello"), "/analyze", 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "silence only",
        dict(json={"audio_data": base64.b64encode(encode(np.zeros(32000, np.float32))).decode()}),
        "/analyze",
        400,
        "SILENT_AUDIO",
    ),
    (
        "too short",
        dict(json={"audio_data": base64.b64encode(encode(voice_like(0.1))).decode()}),
        "/analyze",
        400,
        "AUDIO_TOO_SHORT",
    ),
    (
        "too long",
        dict(json={"audio_data": base64.b64encode(encode(voice_like(31.0), format="FLAC")).decode()}),
        "/analyze",
        400,
        "AUDIO_TOO_LONG",
    ),
    (
        "NaN samples",
        dict(
            json={"audio_data": base64.b64encode(encode(np.full(16000, np.nan, np.float32), subtype="FLOAT")).decode()}
        ),
        "/analyze",
        400,
        "INVALID_SAMPLES",
    ),
    (
        "upload over MAX_UPLOAD_MB",
        _multipart("audio", "big.wav", b"RIFF" + bytes(2_100_000)),
        "/analyze",
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    ("base64 over MAX_UPLOAD_MB", dict(json={"audio_data": _big_b64()}), "/analyze", 413, "PAYLOAD_TOO_LARGE"),
    (
        "body over MAX_REQUEST_MB",
        dict(data=b"x" * 4_100_000, content_type="audio/wav"),
        "/analyze",
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    ("unknown lang", dict(json={"audio_data": CLIP_B64, "lang": "fr"}), "/analyze", 400, "INVALID_LANG"),
    ("batch not a list", dict(json={"audio_segments": CLIP_B64}), "/batch_analyze", 400, "INVALID_AUDIO_DATA"),
    ("batch empty", dict(json={"audio_segments": []}), "/batch_analyze", 400, "EMPTY_BATCH"),
    ("batch missing field", dict(json={"segments": [CLIP_B64]}), "/batch_analyze", 400, "MISSING_AUDIO"),
    (
        "batch over MAX_BATCH_SEGMENTS",
        dict(json={"audio_segments": [CLIP_B64] * 6}),
        "/batch_analyze",
        400,
        "TOO_MANY_SEGMENTS",
    ),
    (
        "batch of only bad segments",
        dict(json={"audio_segments": ["@@", ""]}),
        "/batch_analyze",
        400,
        "NO_VALID_SEGMENTS",
    ),
    (
        "batch wrong content type",
        dict(data=b"x", content_type="text/plain"),
        "/batch_analyze",
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
]


@pytest.mark.parametrize("name,kwargs,path,status,code", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_4xx_envelope(client, name, kwargs, path, status, code):
    body = envelope(client.post(path, **kwargs), status)
    if code is not None:
        assert body["error_code"] == code, body
    # The server is still there and still answers a good request.
    envelope(client.post("/analyze", json={"audio_data": CLIP_B64}), 200)


def test_bad_input_suite_is_broad():
    assert len({b[0] for b in BAD_INPUTS}) >= 20


@pytest.mark.parametrize(
    "method,path,status", [("get", "/analyze", 405), ("get", "/nope", 404), ("put", "/health", 405)]
)
def test_http_errors_use_the_envelope(client, method, path, status):
    envelope(getattr(client, method)(path), status)


def test_uploads_never_touch_disk(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a temporary file was created for an upload")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    big = encode(voice_like(20.0), format="WAV")  # 640 kB: over werkzeug's in-memory default
    envelope(client.post("/analyze", **_multipart("audio", "a.wav", big)), 200)


def test_request_id_and_headers(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(client.get("/health", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]) == 32


def test_no_models_means_503(settings):
    from emotion_service.models.registry import LoadFailure, LoadReport

    analyzer = SpeechEmotionAnalyzer.from_models({})
    analyzer._report = LoadReport(
        preset="full", failures=[LoadFailure("hubert_large", "HuBERT-Large", "superb/x", "offline")]
    )
    client = create_app(settings, analyzer).test_client()
    body = envelope(client.get("/health"), 503)
    assert body["data"]["status"] == "unhealthy"
    assert body["data"]["failed_models"][0]["reason"] == "offline"
    body = envelope(client.post("/analyze", json={"audio_data": CLIP_B64}), 503)
    assert body["error_code"] == "MODEL_UNAVAILABLE"
    assert "offline" in body["message"]


def test_loading_state_is_reported(settings):
    analyzer = SpeechEmotionAnalyzer.from_models({})
    analyzer._report = None
    analyzer._loading = True
    client = create_app(settings, analyzer).test_client()
    response = client.get("/health")
    assert envelope(response, 503)["data"]["status"] == "loading"
    assert response.headers["Retry-After"]
    assert envelope(client.post("/analyze", json={"audio_data": CLIP_B64}), 503)["error_code"] == "MODELS_LOADING"


def test_json_is_utf8_not_escaped(client):
    response = client.get("/health")
    assert "服务运行正常" in response.get_data(as_text=True)
    assert json.loads(response.get_data())["message"] == "服务运行正常"


def test_emotion_inference_off_serves_delivery_only():
    settings = Settings(emotion_inference=False, model_preset="full")
    client = create_app(settings, load_models="now").test_client()
    health = envelope(client.get("/health"), 200)["data"]
    assert health["status"] == "healthy" and health["emotion_inference"] is False and health["models_loaded"] == 0
    data = envelope(client.post("/analyze", json={"audio_data": CLIP_B64}), 200)["data"]
    assert data["final_result"] is None and data["interview_assessment"] is None and data["models_results"] == []
    assert data["delivery"]["speaking_time"] > 1.0


def test_repeated_audio_is_a_cache_hit():
    from emotion_service.analysis.cache import MemoryCache

    analyzer = SpeechEmotionAnalyzer.from_models({"standin": StandInModel()}, cache=MemoryCache(4))
    client = create_app(Settings(), analyzer).test_client()

    def hits() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        return float(re.search(r"^emotion_cache_hits_total (\S+)$", text, re.M).group(1))

    before = hits()
    first = envelope(client.post("/analyze", json={"audio_data": CLIP_B64}), 200)["data"]
    second = envelope(client.post("/analyze", data={"audio": (io.BytesIO(CLIP), "a.wav")}), 200)["data"]
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["final_result"] == second["final_result"]
    assert hits() == before + 1


def test_overload_is_503_with_retry_after(settings):
    from emotion_service.errors import Overloaded

    class Busy(StandInModel):
        def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
            raise Overloaded("The service is busy; retry in a second.", retry_after=2)

    client = create_app(settings, SpeechEmotionAnalyzer.from_models({"busy": Busy()})).test_client()
    response = client.post("/analyze", json={"audio_data": CLIP_B64})
    assert envelope(response, 503)["error_code"] == "OVERLOADED"
    assert response.headers["Retry-After"] == "2"
