"""Hostile input: decompression bombs, HTTP abuse against a real gunicorn server, and overload.

- Decoder: files whose few bytes claim (or really hold) minutes at 655 kHz, eight channels, or
  hours, decoded in a fresh process whose peak memory is measured: each is answered (a 4xx, or
  audio within the limits) in seconds, with peak RSS growth under ``BOUND_MB``. Random and
  mutated WAV/FLAC/MP3/M4A/OGG/WebM bytes are fuzzed in test_fuzz_audio.py.
- HTTP: nested JSON, oversized base64 and bodies, thousands of multipart parts, wrong content
  types, and header abuse (huge or many headers, bogus Content-Length, smuggling) sent to
  ``gunicorn emotion_api:app`` on loopback. The app answers with its envelope; gunicorn itself
  answers header abuse with a bare 400/414/431. After each, /health still answers.
- Overload: beyond the micro-batcher's queue (MAX_QUEUE) or the rate limit, requests are
  refused at once with 503 OVERLOADED / 429 RATE_LIMITED and Retry-After, over a real socket.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.analysis.batching import BatchOptions
from emotion_service.audio.decode import AudioLimits
from emotion_service.http.app import create_app

from .conftest import StandInModel
from .server import ROOT, free_port, running, threaded
from .signals import encode, voice_like, wav
from .test_audio import pyav_encode, tone

KEY = "hostile-test-key-4d2e9a"
LIMIT_SECONDS = 30.0  # MAX_AUDIO_SECONDS of the decoder bombs and of the server below
# Peak RSS growth allowed while decoding one bomb. Decoded audio is kept at 16 kHz (30 s: 1.9 MB,
# plus its concatenation); the rest is decoder buffers. Holding 30 s at 655 kHz instead would take
# 79 MB for the samples alone, before the copies made to resample them.
BOUND_MB = 48.0


# -- decoder bombs --------------------------------------------------------------------------------


def flac(rate: int, channels: int, seconds: int, *, known_length: bool = True) -> bytes:
    """A constant-valued FLAC: about 2 kB per second of audio at 655 kHz (a ~300:1 ratio).

    With ``known_length=False`` the STREAMINFO sample count is 0 ("unknown"), as a streaming
    encoder writes it, so the decoder cannot refuse the file from its header.
    """
    buffer = io.BytesIO()
    block = np.full((rate, channels), 0.25, np.float32)
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as out:
        for _ in range(seconds):
            out.write(block)
    data = bytearray(buffer.getvalue())
    if not known_length:
        # STREAMINFO follows "fLaC" and its 4-byte block header; the sample count is the low 36
        # bits of its bytes 13..17.
        field = int.from_bytes(data[8 + 13 : 8 + 18], "big") & ~((1 << 36) - 1)
        data[8 + 13 : 8 + 18] = field.to_bytes(5, "big")
    return bytes(data)


def wav_header(*, channels: int = 1, rate: int = 16_000, data_bytes: int, payload: bytes) -> bytes:
    block = channels * 2
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, 16)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + riff + payload


def patch_after(data: bytes, marker: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite bytes at ``offset`` after every occurrence of ``marker`` (e.g. an MP4 box name)."""
    out = bytearray(data)
    starts = [m.start() for m in re.finditer(re.escape(marker), data)]
    assert starts, f"{marker!r} not found"
    for start in starts:
        out[start + offset : start + offset + len(value)] = value
    return bytes(out)


def bombs() -> dict[str, tuple[bytes, set[str]]]:
    """Name -> (file, acceptable outcomes): an error code, or "ok" for audio within the limits."""
    speech = (np.sin(np.arange(16_000) / 3) * 8000).astype("<i2").tobytes()  # 1 s of 16 kHz PCM
    m4a = pyav_encode(tone(2.0, 44_100), 44_100, "mp4", "aac")
    mp3 = encode(voice_like(2.0), format="MP3")
    return {
        "flac 655 kHz, length in header": (flac(655_350, 1, 20), {"UNSUPPORTED_SAMPLE_RATE"}),
        "flac 192 kHz, 2x the limit, length in header": (flac(192_000, 1, 60), {"AUDIO_TOO_LONG"}),
        "flac 192 kHz, 2x the limit, length unknown": (flac(192_000, 1, 60, known_length=False), {"AUDIO_TOO_LONG"}),
        "flac 192 kHz, just under the limit, length unknown": (flac(192_000, 1, 28, known_length=False), {"ok"}),
        # 8 x 192 kHz is more samples per second than the size of these files can pay for.
        "flac 8 channels 192 kHz, under the limit, length in header": (
            flac(192_000, 8, 20),
            {"UNSUPPORTED_SAMPLE_RATE"},
        ),
        "flac 8 channels 192 kHz, 2x the limit, length unknown": (
            flac(192_000, 8, 60, known_length=False),
            {"UNSUPPORTED_SAMPLE_RATE"},
        ),
        "wav claiming 37 hours in its header": (wav_header(data_bytes=0xFFFFFFF0, payload=speech), {"ok"}),
        "wav claiming 65535 channels": (
            wav_header(channels=65535, data_bytes=len(speech), payload=speech),
            {"TOO_MANY_CHANNELS", "CORRUPT_AUDIO"},
        ),
        "wav claiming 4 GHz": (
            wav_header(rate=4_000_000_000, data_bytes=len(speech), payload=speech),
            {"UNSUPPORTED_SAMPLE_RATE", "CORRUPT_AUDIO"},
        ),
        # mvhd/mdhd (version 0): 4 bytes flags, 8 bytes times, 4 bytes timescale, then the duration.
        "m4a claiming a 13-hour track": (
            patch_after(patch_after(m4a, b"mvhd", 20, b"\xff\xff\xff\xf0"), b"mdhd", 20, b"\xff\xff\xff\xf0"),
            {"ok", "CORRUPT_AUDIO"},
        ),
        # The Xing/Info tag's frame count (after the tag and its 4-byte flags) says how long an MP3 is.
        "mp3 whose Xing/Info tag claims 4 billion frames": (
            patch_after(mp3, b"Xing" if b"Xing" in mp3 else b"Info", 8, b"\xff\xff\xff\xf0"),
            {"ok", "CORRUPT_AUDIO"},
        ),
    }


# Runs in a fresh interpreter per file: decodes it and reports the outcome, the time taken and the
# growth of peak RSS (the peak is reset after a warm-up decode, through /proc/self/clear_refs).
_MEASURE = r"""
import json, re, sys, time
from pathlib import Path
from emotion_service.audio.decode import AudioLimits, decode_audio
from emotion_service.errors import InvalidAudio, PayloadTooLarge

def kib(key):
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))

limits = AudioLimits(max_seconds=float(sys.argv[1]))
decode_audio(Path(sys.argv[2]).read_bytes(), limits)  # load the codecs before measuring
data = Path(sys.argv[3]).read_bytes()
Path("/proc/self/clear_refs").write_text("5")
before = kib("VmRSS")
started = time.perf_counter()
try:
    outcome, seconds = "ok", decode_audio(data, limits).duration
except (InvalidAudio, PayloadTooLarge) as error:
    outcome, seconds = error.error_code, None
elapsed = time.perf_counter() - started
growth_mb = (kib("VmHWM") - before) / 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "elapsed": elapsed, "growth_mb": growth_mb}))
"""


def measure_decoding(data: bytes, tmp_path: Path, limit_seconds: float = LIMIT_SECONDS) -> dict:
    """Decode ``data`` in a fresh process: outcome (error code or "ok"), seconds, elapsed, growth_mb."""
    warm, bomb = tmp_path / "warm.wav", tmp_path / "bomb"
    warm.write_bytes(wav(1.0))
    bomb.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(limit_seconds), str(warm), str(bomb)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_decompression_bombs_are_answered_quickly_with_bounded_memory(tmp_path):
    for name, (data, expected) in bombs().items():
        assert len(data) < 1_000_000, f"{name}: {len(data)} bytes"  # all small uploads
        result = measure_decoding(data, tmp_path)
        print(f"{name}: {len(data) / 1e3:.0f} kB -> {result['outcome']} in {result['elapsed']:.2f} s, "
              f"peak RSS +{result['growth_mb']:.1f} MB")  # fmt: skip
        assert result["outcome"] in expected, (name, result)
        assert result["elapsed"] < 10, (name, result)
        assert result["growth_mb"] < BOUND_MB, (name, result)
        if "length in header" in name and result["outcome"] != "ok":
            assert result["elapsed"] < 0.5, result  # refused from its header, without decoding
        if name == "wav claiming 37 hours in its header":
            assert result["seconds"] == pytest.approx(1.0), result
        elif result["outcome"] == "ok":
            assert 0 < result["seconds"] <= LIMIT_SECONDS, (name, result)


# -- HTTP abuse through gunicorn ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """``gunicorn emotion_api:app`` (bundled model, keys on, 1 MB upload / 2 MB body limits)."""
    port = free_port()
    env = {
        "API_KEYS": KEY, "MAX_UPLOAD_MB": "1", "MAX_REQUEST_MB": "2", "MAX_AUDIO_SECONDS": str(LIMIT_SECONDS),
        "RATE_LIMITS": "off", "LOG_FILE": "", "WORKERS": "1", "THREADS": "4",
        "JOB_DIR": str(tmp_path_factory.mktemp("jobs")),
    }  # fmt: skip
    with running(["-m", "gunicorn", "emotion_api:app"], port, env=env, ready=("healthy",)) as (url, _):
        yield url, port


def _envelope(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert body["success"] is False and body["error_code"] == code and body["message"], body


def _still_serving(url: str) -> None:
    assert requests.get(url + "/health", timeout=10).json()["data"]["status"] == "healthy"


def _multipart(parts: list[tuple[str | None, bytes]], boundary: str = "b0undary") -> bytes:
    chunks = []
    for name, value in parts:
        disposition = "form-data" if name is None else f'form-data; name="{name}"'
        if name == "audio":
            disposition += '; filename="a.wav"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


MULTIPART = "multipart/form-data; boundary=b0undary"
# (name, path, body, content type, expected status, expected error_code)
ABUSE = [
    ("nested JSON", "/analyze", b'{"audio_data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json",
     400, "INVALID_JSON"),
    ("nested JSON to /jobs", "/jobs", b"[" * 50_000, "application/json", 400, "INVALID_JSON"),
    ("nested JSON in the jobs options field", "/jobs",
     _multipart([("audio", wav(1.0)), ("options", b"[" * 50_000)]), MULTIPART, 400, "INVALID_OPTIONS"),
    ("base64 over MAX_UPLOAD_MB", "/analyze", json.dumps({"audio_data": "A" * 1_500_000}).encode(),
     "application/json", 413, "PAYLOAD_TOO_LARGE"),
    ("body over MAX_REQUEST_MB", "/analyze", json.dumps({"audio_data": "A" * 3_000_000}).encode(),
     "application/json", 413, "PAYLOAD_TOO_LARGE"),
    ("5000 multipart parts", "/analyze", _multipart([(f"f{i}", b"x") for i in range(5000)]), MULTIPART,
     413, "PAYLOAD_TOO_LARGE"),
    ("multipart part without a name", "/analyze", _multipart([(None, b"x"), ("other", b"y")]), MULTIPART,
     400, "MISSING_AUDIO"),
    ("multipart without a boundary", "/analyze", b"--x\r\n\r\n", "multipart/form-data", 400, "MISSING_AUDIO"),
    ("text/plain", "/analyze", b"hello", "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("application/xml", "/batch_analyze", b"<audio/>", "application/xml", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("JSON that is not UTF-8", "/analyze", b'{"audio_data": "\xff\xfe"}', "application/json", 400, "INVALID_JSON"),
    ("JSON that is a list", "/batch_analyze", b"[1, 2]", "application/json", 400, "INVALID_JSON"),
    ("a FLAC bomb twice MAX_AUDIO_SECONDS", "/analyze", flac(192_000, 1, 60), "audio/flac", 400, "AUDIO_TOO_LONG"),
]  # fmt: skip


@pytest.mark.parametrize("name,path,body,content_type,status,code", ABUSE, ids=[case[0] for case in ABUSE])
def test_abusive_bodies_get_a_4xx_envelope(gunicorn, name, path, body, content_type, status, code):
    url, _ = gunicorn
    started = time.perf_counter()
    response = requests.post(
        url + path, data=body, headers={"Content-Type": content_type, "X-API-Key": KEY}, timeout=30
    )
    _envelope(response, status, code)
    assert time.perf_counter() - started < 10
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    _still_serving(url)


def _raw(port: int, request: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes; return what the server answers before it closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        try:
            conn.sendall(request)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close before all was sent; what it answered is still readable
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def _status(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match, answer[:200]
    return int(match.group(1))


HEADER_ABUSE = [
    ("one 64 kB header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65_536 + b"\r\n\r\n", False),
    ("300 headers", b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 300 + b"\r\n", False),
    ("a 20 kB URL", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ("Content-Length: abc", b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", False),
    ("Content-Length: -1", b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", False),
    ("two Content-Lengths", b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
     False),
    ("Content-Length with chunked (smuggling)",
     b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    ("Content-Length beyond the body", b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
     b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 100000\r\n\r\nRIFF", True),
    ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 / HTTP/1.1\r\n\r\n", False),
]  # fmt: skip


@pytest.mark.parametrize("name,request_bytes,half_close", HEADER_ABUSE, ids=[case[0] for case in HEADER_ABUSE])
def test_header_abuse_gets_a_4xx_and_the_server_keeps_serving(gunicorn, name, request_bytes, half_close):
    url, port = gunicorn
    started = time.perf_counter()
    answer = _raw(port, request_bytes, half_close=half_close)
    assert 400 <= _status(answer) < 500, answer[:300]
    assert time.perf_counter() - started < 6
    _still_serving(url)


def _read_response(conn: socket.socket) -> tuple[int, bytes]:
    """One HTTP response from a keep-alive connection: its status and body."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection (after {head[:100]!r})"
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection mid-response"
        body += chunk
    return _status(head), body


def test_refused_large_bodies_keep_the_connection_usable(gunicorn):
    """A request answered without reading its 600 kB body (a 401 here; a 429 is the same) leaves
    the keep-alive connection usable: the next request on it is answered, not reset.

    gunicorn drains at most 64 kB of a body the app did not read and otherwise closes the
    connection after the answer; a client reusing it then got a reset (seen as ConnectionErrors
    in load tests under rate limiting), so the app reads what is left (emotion_service.http.app).
    """
    _, port = gunicorn
    body = json.dumps({"audio_data": base64.b64encode(bytes(450_000)).decode()}).encode()
    head = b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    request = head % len(body) + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(3):
            conn.sendall(request)
            status, answer = _read_response(conn)
            assert status == 401 and json.loads(answer)["error_code"] == "UNAUTHORIZED"
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(conn)[0] == 200


# -- overload --------------------------------------------------------------------------------------


class SlowModel(StandInModel):
    """The stand-in model taking ``seconds`` per batch, like a big model on a busy CPU."""

    def __init__(self, seconds: float) -> None:
        super().__init__("slow")
        self.seconds = seconds

    def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
        time.sleep(self.seconds)
        return super().process_signals(signals, sampling_rate, same_speaker=same_speaker)


def _burst(url: str, count: int, body: dict) -> list[tuple[requests.Response, float]]:
    """``count`` clients post at the same moment; each response with its latency."""
    barrier = threading.Barrier(count)
    results: list[tuple[requests.Response, float]] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait()
        started = time.perf_counter()
        response = requests.post(url + "/analyze", json=body, timeout=60)
        with lock:
            results.append((response, time.perf_counter() - started))

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(results) == count
    return results


def test_beyond_the_queue_requests_are_refused_at_once_with_retry_after(settings):
    """MAX_QUEUE=2 and a model taking 1 s: of 10 simultaneous requests, those that find the queue
    full get 503 OVERLOADED with Retry-After well before one model call could finish; the others
    are served; afterwards the service serves normally.
    """
    model = SlowModel(1.0)
    analyzer = SpeechEmotionAnalyzer.from_models(
        {"slow": model}, {"slow": 1.0}, limits=AudioLimits(max_seconds=30),
        batching=BatchOptions(max_batch=1, max_wait=0.0, max_queue=2),
    )  # fmt: skip
    app = create_app(replace(settings, rate_limits="off"), analyzer)
    body = {"audio_data": base64.b64encode(wav(1.0)).decode()}
    with threaded(app) as url:
        results = _burst(url, 10, body)
        refused = [(r, t) for r, t in results if r.status_code == 503]
        served = [(r, t) for r, t in results if r.status_code == 200]
        assert len(refused) + len(served) == 10, [r.status_code for r, _ in results]
        assert refused and served
        for response, latency in refused:
            _envelope(response, 503, "OVERLOADED")
            assert int(response.headers["Retry-After"]) >= 1
            assert latency < 0.8  # not queued behind the model
        assert len(served) <= 4  # one running, two queued (a fourth if the first finished meanwhile)
        print(f"10 at once, MAX_QUEUE=2: {len(served)} served, {len(refused)} refused with 503 in at most "
              f"{max(t for _, t in refused) * 1000:.0f} ms")  # fmt: skip
        assert requests.post(url + "/analyze", json=body, timeout=30).status_code == 200


def test_beyond_the_rate_limit_requests_are_refused_at_once_with_retry_after(settings, analyzer):
    app = create_app(replace(settings, rate_limits="3/minute"), analyzer)
    body = {"audio_data": base64.b64encode(wav(1.0)).decode()}
    with threaded(app) as url:
        results = _burst(url, 8, body)
        statuses = sorted(r.status_code for r, _ in results)
        assert statuses == [200] * 3 + [429] * 5, statuses
        for response, latency in results:
            if response.status_code == 429:
                _envelope(response, 429, "RATE_LIMITED")
                assert 1 <= int(response.headers["Retry-After"]) <= 61
                assert latency < 2
