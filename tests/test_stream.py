"""GET /stream, the WebSocket protocol, through a real socket (websocket-client) without a browser."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import av
import numpy as np
import pytest
import requests
import soxr
import websocket

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.config import Settings
from emotion_service.http.app import create_app

from .stream_client import answers, close_all, connect, pcm16, receive_all, serving, start_message, stream_pcm

KEY = "stream-test-key-0123456789"


def _settings(**overrides) -> Settings:
    base = {"rate_limits": "off", "log_file": "", "vad": "energy", "max_audio_seconds": 30}
    return Settings(**{**base, **overrides})


@pytest.fixture(autouse=True)
def _close_sockets():
    yield
    close_all()


@pytest.fixture
def url(analyzer):
    with serving(create_app(_settings(), analyzer)) as base:
        yield base


def _errors(messages):
    return [m for m in messages if m["type"] == "error"]


def _only_error(messages, code):
    errors = _errors(messages)
    assert [e["error_code"] for e in errors] == [code], messages
    assert len(errors[0]["message"]) > 20
    return errors[0]


def test_pcm_faster_than_real_time_gives_each_answer_and_a_summary(url):
    audio = answers(3)
    ws = connect(url)
    ws.send(start_message(candidate_id="c-42"))
    stream_pcm(ws, pcm16(audio), chunk=3201, speed=3)  # odd frame sizes: samples split across frames
    messages, code = receive_all(ws)
    assert code == 1000 and not _errors(messages)
    assert messages[0]["type"] == "ready" and messages[0]["candidate_id"] == "c-42"
    segments = [m for m in messages if m["type"] == "segment"]
    # answers: 0.5 s of quiet, then 1.6 s of voice and 1.2 s of quiet, three times
    assert [s["index"] for s in segments] == [0, 1, 2]
    for i, s in enumerate(segments):
        speech_start = 0.5 + i * 2.8
        assert abs(s["start"] - speech_start) < 0.25 and abs(s["end"] - (speech_start + 1.6)) < 0.3, s
        assert s["final_result"]["recommended_emotion_label"] and 0 < s["final_result"]["confidence"] <= 1
        assert s["interview_assessment"]["recommendations"]
        assert s["delivery"]["speaking_time"] > 1.0
    levels = [m for m in messages if m["type"] == "level"]
    assert len(levels) >= 30 and {True, False} <= {m["speaking"] for m in levels}
    loud = [m["db"] for m in levels if m["speaking"]]
    quiet = [m["db"] for m in levels if not m["speaking"]]
    assert min(loud) > max(quiet) - 10 and np.median(loud) > np.median(quiet) + 20
    summary = messages[-1]
    assert summary["type"] == "summary" and summary["segments"] == 3 and summary["candidate_id"] == "c-42"
    assert summary["duration"] == pytest.approx(len(audio) / 16000, abs=0.01)
    assert summary["session_summary"]["segments_analyzed"] == 3
    assert summary["delivery"]["pause_count"] >= 2


def test_pcm_slower_than_real_time_sends_each_segment_while_streaming(url):
    audio = answers(2, seconds=1.2, gap=1.0)
    ws = connect(url)
    ws.send(start_message(sample_rate=48000))  # resampled to 16 kHz on the way in
    arrivals: list[tuple[float, dict]] = []

    def read() -> None:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                arrivals.append((time.monotonic(), json.loads(data)))

    reader = threading.Thread(target=read)
    reader.start()
    started = time.monotonic()
    # 100 ms frames at 0.8x real time
    data = pcm16(soxr.resample(audio, 16000, 48000).astype(np.float32))
    frame = 9600
    for offset in range(0, len(data), frame):
        ws.send_binary(data[offset : offset + frame])
        time.sleep(0.1 / 0.8)
    ws.send(json.dumps({"type": "stop"}))
    reader.join(timeout=30)
    segments = [(t, m) for t, m in arrivals if m["type"] == "segment"]
    assert len(segments) == 2, arrivals
    # The first answer's result came while the stream was still being sent, soon after its speech ended.
    arrived, first = segments[0]
    speech_end_sent = started + (0.5 + 1.2) / 0.8
    assert arrived - speech_end_sent < 1.0 / 0.8 + 0.5, (arrived - speech_end_sent, first)
    assert arrived < started + len(audio) / 16000 / 0.8 - 0.5
    assert arrivals[-1][1]["type"] == "summary"


def test_webm_opus_chunks_like_mediarecorder(url):
    buffer = io.BytesIO()
    signal = soxr.resample(answers(2), 16000, 48000).astype(np.float32)
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        for offset in range(0, len(signal), 960):
            frame = av.AudioFrame.from_ndarray(signal[None, offset : offset + 960], format="flt", layout="mono")
            frame.sample_rate = 48000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = buffer.getvalue()
    ws = connect(url)
    ws.send(json.dumps({"type": "start", "format": "webm", "lang": "zh"}))
    for offset in range(0, len(data), 4000):
        ws.send_binary(data[offset : offset + 4000])
    ws.send(json.dumps({"type": "stop"}))
    messages, code = receive_all(ws)
    assert code == 1000 and not _errors(messages)
    segments = [m for m in messages if m["type"] == "segment"]
    assert len(segments) == 2 and abs(segments[1]["start"] - 3.3) < 0.3, segments
    assert (
        segments[0]["final_result"]["recommended_emotion"] != segments[0]["final_result"]["recommended_emotion_label"]
    )  # zh names
    assert messages[-1]["type"] == "summary" and messages[-1]["segments"] == 2


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (b"\x00\x01" * 100, "MISSING_START"),  # audio before start
        ('{"type": "stop"}', "MISSING_START"),
        ("not json", "INVALID_MESSAGE"),
        ("[1, 2]", "INVALID_MESSAGE"),
        ('{"type": "start", "format": "mp3"}', "INVALID_START"),
        ('{"type": "start", "sample_rate": 12345}', "INVALID_START"),
        ('{"type": "start", "lang": "fr"}', "INVALID_LANG"),
    ],
)
def test_a_stream_must_begin_with_a_valid_start(url, first, code):
    ws = connect(url)
    ws.send_binary(first) if isinstance(first, bytes) else ws.send(first)
    messages, close = receive_all(ws)
    _only_error(messages, code)
    assert close == 4400


def test_bad_frames_after_start(url, analyzer):
    ws = connect(url)
    ws.send(start_message())
    ws.send("hello")
    messages, close = receive_all(ws)
    assert _only_error(messages, "INVALID_MESSAGE") and close == 4400

    ws = connect(url)
    ws.send(start_message())
    ws.send(start_message())  # a second start
    messages, close = receive_all(ws)
    assert "'start'" in _only_error(messages, "INVALID_MESSAGE")["message"] and close == 4400

    ws = connect(url)
    ws.send(json.dumps({"type": "start", "format": "webm"}))
    for _ in range(5):
        ws.send_binary(b"this is not webm at all" * 100)
        time.sleep(0.05)
    ws.send(json.dumps({"type": "stop"}))
    messages, close = receive_all(ws)
    assert "WebM" in _only_error(messages, "INVALID_AUDIO")["message"] and close == 4400

    with serving(create_app(_settings(stream_max_frame_kb=10), analyzer)) as small:
        ws = connect(small)
        ws.send(start_message())
        ws.send_binary(bytes(6000))  # fine
        ws.send_binary(bytes(12_000))
        messages, close = receive_all(ws)
        assert "STREAM_MAX_FRAME_KB" in _only_error(messages, "FRAME_TOO_LARGE")["message"] and close == 4413


def test_audio_far_faster_than_real_time_is_refused(analyzer):
    with serving(create_app(_settings(stream_max_speed=2), analyzer)) as url:
        ws = connect(url)
        ws.send(start_message())
        with contextlib.suppress(websocket.WebSocketException, OSError):  # the server may close mid-send
            stream_pcm(ws, pcm16(np.zeros(16000 * 20, np.float32)), chunk=32000, stop=False)
            ws.send(json.dumps({"type": "stop"}))
            time.sleep(1)
            ws.send(json.dumps({"type": "stop"}))
        messages, close = receive_all(ws)
    error = _only_error(messages, "STREAM_TOO_FAST")
    assert "STREAM_MAX_SPEED" in error["message"] and close == 4429


def test_idle_and_overlong_streams_are_closed(analyzer):
    with serving(create_app(_settings(stream_idle_seconds=0.5, stream_max_seconds=3), analyzer)) as url:
        ws = connect(url)
        ws.send(start_message())
        began = time.monotonic()
        messages, close = receive_all(ws)
        assert "STREAM_IDLE_SECONDS" in _only_error(messages, "IDLE_TIMEOUT")["message"] and close == 4408
        assert 0.4 < time.monotonic() - began < 3

        ws = connect(url)
        ws.send(start_message())
        with contextlib.suppress(websocket.WebSocketException, OSError):  # the server may close mid-send
            stream_pcm(ws, pcm16(answers(2)), chunk=6400, speed=None, stop=False)  # 6.1 s in total
            time.sleep(1)
            ws.send(json.dumps({"type": "stop"}))
        messages, close = receive_all(ws)
        assert "STREAM_MAX_SECONDS" in _only_error(messages, "STREAM_TOO_LONG")["message"] and close == 4413
        assert [m["index"] for m in messages if m["type"] == "segment"] == [0]  # what came before the limit


def test_api_keys_in_the_header_or_the_start_message(analyzer):
    with serving(create_app(_settings(api_keys=(KEY,)), analyzer)) as url:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(url, {"X-API-Key": "wrong"})
        assert refused.value.status_code == 401
        assert json.loads(refused.value.resp_body)["error_code"] == "UNAUTHORIZED"

        for start, code in ((start_message(), "is missing"), (start_message(api_key="wrong"), "is not an accepted")):
            ws = connect(url)
            ws.send(start)
            messages, close = receive_all(ws)
            assert code in _only_error(messages, "UNAUTHORIZED")["message"] and close == 4401

        for headers, start in (({"X-API-Key": KEY}, start_message()), ({}, start_message(api_key=KEY))):
            ws = connect(url, headers)
            ws.send(start)
            assert json.loads(ws.recv())["type"] == "ready"
            ws.send(json.dumps({"type": "stop"}))
            messages, close = receive_all(ws)
            assert close == 1000 and messages[-1]["type"] == "summary" and messages[-1]["delivery"] is None


def test_max_streams_per_process(analyzer):
    with serving(create_app(_settings(max_streams=2), analyzer)) as url:
        open_ones = [connect(url), connect(url)]
        for ws in open_ones:
            ws.send(start_message())
            assert json.loads(ws.recv())["type"] == "ready"
        third = connect(url)
        messages, close = receive_all(third)
        assert "MAX_STREAMS" in _only_error(messages, "TOO_MANY_STREAMS")["message"] and close == 1013
        open_ones[0].send(json.dumps({"type": "stop"}))
        assert receive_all(open_ones[0])[1] == 1000
        time.sleep(0.2)  # the server thread releases its slot after the close
        again = connect(url)
        again.send(start_message())
        assert json.loads(again.recv())["type"] == "ready"
        http = url.replace("ws://", "http://")
        text = requests.get(http + "/metrics", timeout=10).text
        assert 'emotion_streams_total{outcome="TOO_MANY_STREAMS"}' in text
        assert 'emotion_streams_total{outcome="ok"}' in text
        assert requests.get(http + "/health", timeout=10).status_code == 200  # HTTP still served meanwhile


def test_emotion_inference_off_streams_delivery_only():
    analyzer = SpeechEmotionAnalyzer(emotion_inference=False)
    with serving(create_app(_settings(emotion_inference=False, stream_max_speed=100), analyzer)) as url:
        ws = connect(url)
        ws.send(start_message())
        stream_pcm(ws, pcm16(answers(2)), speed=None)
        messages, close = receive_all(ws)
    assert close == 1000 and messages[0]["emotion_inference"] is False
    segments = [m for m in messages if m["type"] == "segment"]
    assert len(segments) == 2
    assert all(s["final_result"] is None and s["interview_assessment"] is None for s in segments)
    assert all(s["delivery"]["speaking_time"] > 1 for s in segments)
    assert messages[-1]["session_summary"] is None and messages[-1]["delivery"]["duration"] > 6


def test_plain_get_is_not_a_websocket_and_openapi_describes_the_protocol(client):
    response = client.get("/stream")
    assert response.status_code == 400 and response.get_json()["success"] is False
    described = client.get("/openapi.json").get_json()["paths"]["/stream"]["get"]["description"]
    for word in ('"type": "start"', "pcm16", "webm", "segment", "level", "summary", "4408", "STREAM_MAX_SECONDS"):
        assert word in described
