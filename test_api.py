"""Check a running speech emotion API end to end.

    python test_api.py --url http://127.0.0.1:5000

It generates its own audio (a voice-like harmonic signal, no recordings needed), exercises every
endpoint the spec names with both input styles, sends bad inputs that must be refused with a 4xx
envelope, and checks the server is still up afterwards. Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os
import struct
import sys
import wave
from collections.abc import Callable
from typing import Any

import requests

RATE = 16_000
CANONICAL = {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}


def voice_like_wav(seconds: float = 3.0, f0: float = 140.0, rate: int = RATE, seed: int = 0) -> bytes:
    """A WAV of a voice-like signal: harmonics of a gliding pitch, syllable-rate loudness, a little noise."""
    frames = bytearray()
    phase = 0.0
    state = seed * 7919 + 1
    for n in range(int(seconds * rate)):
        t = n / rate
        pitch = f0 * (1.0 + 0.15 * math.sin(2 * math.pi * 0.7 * t))
        phase += 2 * math.pi * pitch / rate
        envelope = 0.5 * (1 - math.cos(2 * math.pi * 4.0 * t)) ** 1.5
        voiced = sum(math.sin(k * phase) / k for k in range(1, 8))
        state = (1103515245 * state + 12345) % 2**31
        noise = (state / 2**31 - 0.5) * 0.05
        sample = 0.25 * envelope * voiced + noise
        frames += struct.pack("<h", max(-32767, min(32767, int(sample * 32767))))
    return _wav(bytes(frames), rate)


def silent_wav(seconds: float = 2.0) -> bytes:
    return _wav(b"\x00\x00" * int(seconds * RATE), RATE)


def _wav(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


class Checker:
    def __init__(self, url: str, timeout: float, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.failures: list[str] = []
        self.passed = 0

    def check(self, name: str, test: Callable[[], None]) -> None:
        try:
            test()
        except (AssertionError, requests.RequestException, ValueError, KeyError, TypeError) as exc:
            self.failures.append(name)
            print(f"FAIL  {name}: {type(exc).__name__}: {exc}")
        else:
            self.passed += 1
            print(f"ok    {name}")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        return requests.get(self.url + path, timeout=self.timeout, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        return requests.post(self.url + path, timeout=self.timeout, **kwargs)


def expect_envelope(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"HTTP {response.status_code} (expected {status}): {response.text[:300]}"
    body = response.json()
    assert set(body) >= {"success", "message", "data"}, f"not the envelope: {sorted(body)}"
    assert body["success"] is (status < 400), f"success={body['success']} with HTTP {status}"
    assert isinstance(body["message"], str) and body["message"], "empty message"
    if status >= 400:
        assert isinstance(body.get("error_code"), str) and body["error_code"], "error without error_code"
    return body


def check_analysis(data: dict[str, Any], lang: str = "zh") -> None:
    info = data["basic_info"]
    assert info["sample_rate"] == RATE and info["duration"] > 0 and info["models_count"] >= 1, info
    assert len(data["models_results"]) == info["models_count"]
    for result in data["models_results"]:
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-2, result
        assert set(result["probabilities"]) <= CANONICAL
    final = data["final_result"]
    for key in ("recommended_emotion", "confidence", "best_model", "average_confidence", "models_consensus"):
        assert key in final, f"final_result lacks {key}"
    assert final["recommended_emotion_label"] in CANONICAL
    assert 0 < final["confidence"] <= 1
    assert abs(sum(final["probabilities"].values()) - 1) < 1e-2
    assessment = data["interview_assessment"]
    assert assessment["emotion_type"] in {"positive", "neutral", "negative"}
    assert 0 <= assessment["score"] <= 100
    levels = {"高", "中", "低"} if lang == "zh" else {"high", "medium", "low"}
    assert assessment["confidence_level"] in levels, assessment["confidence_level"]
    assert assessment["recommendations"] and all(isinstance(r, str) and r for r in assessment["recommendations"])
    if lang == "zh":
        assert any("\u4e00" <= ch <= "\u9fff" for ch in final["recommended_emotion"]), final["recommended_emotion"]
    else:
        assert final["recommended_emotion"] == final["recommended_emotion_label"]


def run(url: str, timeout: float, api_key: str | None = None) -> Checker:
    c = Checker(url, timeout, api_key)
    clip = voice_like_wav()
    clip_b64 = base64.b64encode(clip).decode()
    results: dict[str, Any] = {}

    def health() -> None:
        body = expect_envelope(c.get("/health"), 200)
        assert body["data"]["status"] in ("healthy", "degraded"), body["data"]["status"]
        assert body["data"]["models_loaded"] >= 1 and body["data"]["available_models"]

    def analyze_upload() -> None:
        body = expect_envelope(c.post("/analyze", files={"audio": ("answer.wav", clip, "audio/wav")}), 200)
        check_analysis(body["data"])
        results["upload"] = body["data"]

    def analyze_base64() -> None:
        body = expect_envelope(c.post("/analyze", json={"audio_data": "data:audio/wav;base64," + clip_b64}), 200)
        check_analysis(body["data"])
        assert body["data"]["final_result"]["probabilities"] == results["upload"]["final_result"]["probabilities"], (
            "the same audio gave different results as upload and as base64"
        )

    def analyze_english() -> None:
        body = expect_envelope(c.post("/analyze?lang=en", json={"audio_data": clip_b64}), 200)
        check_analysis(body["data"], lang="en")

    def batch() -> None:
        segments = [base64.b64encode(voice_like_wav(2.0, f0, seed=i)).decode() for i, f0 in enumerate((120, 160, 200))]
        body = expect_envelope(c.post("/batch_analyze", json={"audio_segments": segments}), 200)
        rows = body["data"]["results"]
        assert [r["index"] for r in rows] == [0, 1, 2] and all(r["success"] for r in rows), rows
        for row in rows:
            check_analysis(row)
        summary = body["data"]["session_summary"]
        assert summary["segments_analyzed"] == 3
        assert abs(sum(summary["emotion_distribution"].values()) - 1) < 1e-2
        assert 0 <= summary["stability"]["score"] <= 1 and summary["recommendations"]

    def batch_with_one_bad_segment() -> None:
        segments = [clip_b64, "not base64 at all!!", clip_b64]
        body = expect_envelope(c.post("/batch_analyze", json={"audio_segments": segments}), 200)
        rows = body["data"]["results"]
        assert [r["success"] for r in rows] == [True, False, True], rows
        assert rows[1]["error_code"] and rows[1]["message"]
        assert body["data"]["session_summary"]["segments_analyzed"] == 2

    bad_inputs: list[tuple[str, Callable[[], requests.Response], int]] = [
        ("empty upload", lambda: c.post("/analyze", files={"audio": ("a.wav", b"", "audio/wav")}), 400),
        ("wrong multipart field", lambda: c.post("/analyze", files={"file": ("a.wav", clip, "audio/wav")}), 400),
        ("not audio", lambda: c.post("/analyze", files={"audio": ("a.wav", b"hello world" * 100, "audio/wav")}), 400),
        ("truncated WAV", lambda: c.post("/analyze", files={"audio": ("a.wav", clip[:60], "audio/wav")}), 400),
        ("invalid base64", lambda: c.post("/analyze", json={"audio_data": "%%%not-base64%%%"}), 400),
        ("JSON without audio_data", lambda: c.post("/analyze", json={"audio": clip_b64}), 400),
        (
            "malformed JSON",
            lambda: c.post("/analyze", data=b"{not json", headers={"Content-Type": "application/json"}),
            400,
        ),
        ("wrong content type", lambda: c.post("/analyze", data=b"hello", headers={"Content-Type": "text/plain"}), 415),
        ("silence only", lambda: c.post("/analyze", files={"audio": ("s.wav", silent_wav(), "audio/wav")}), 400),
        ("too short", lambda: c.post("/analyze", files={"audio": ("s.wav", voice_like_wav(0.1), "audio/wav")}), 400),
        ("unknown lang", lambda: c.post("/analyze?lang=fr", json={"audio_data": clip_b64}), 400),
        ("batch not a list", lambda: c.post("/batch_analyze", json={"audio_segments": clip_b64}), 400),
        ("empty batch", lambda: c.post("/batch_analyze", json={"audio_segments": []}), 400),
        ("GET on /analyze", lambda: c.get("/analyze"), 405),
        ("unknown path", lambda: c.get("/no-such-endpoint"), 404),
    ]

    c.check("GET /health", health)
    c.check("POST /analyze (multipart upload)", analyze_upload)
    if "upload" in results:
        c.check("POST /analyze (JSON base64 with data URI)", analyze_base64)
    c.check("POST /analyze?lang=en", analyze_english)
    c.check("POST /batch_analyze (3 segments)", batch)
    c.check("POST /batch_analyze (one bad segment)", batch_with_one_bad_segment)
    for name, send, status in bad_inputs:
        c.check(
            f"refused: {name} -> {status}", lambda send=send, status=status: expect_envelope(send(), status) and None
        )
    c.check("still healthy after bad inputs", health)
    return c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="base URL of the running API")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"), help="X-API-Key to send (default: $API_KEY)")
    args = parser.parse_args(argv)
    try:
        requests.get(args.url.rstrip("/") + "/health", timeout=args.timeout)
    except requests.RequestException as exc:
        print(f"Cannot reach {args.url}: {exc}. Start the server first: python start_api_server.py", file=sys.stderr)
        return 2
    checker = run(args.url, args.timeout, args.api_key)
    print(f"{checker.passed} passed, {len(checker.failures)} failed")
    return 1 if checker.failures else 0


if __name__ == "__main__":
    sys.exit(main())
