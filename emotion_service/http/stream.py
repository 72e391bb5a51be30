"""``GET /stream``: live analysis over a WebSocket (flask-sock).

The protocol (README, "Live analysis"): the client sends a ``start`` text message, binary audio
frames, then ``stop``; the service answers ``ready``, ``level`` a few times a second, ``segment``
each time the VAD closes a stretch of speech, and ``summary`` after ``stop``. An error is one
``{"type": "error", "error_code", "message"}`` message followed by a close code
(:mod:`.streaming` lists them). The work is done by :class:`.streaming.StreamSession`; this module
only moves messages, checks the key and counts streams.

The handshake is an ordinary request: a wrong ``X-API-Key`` header or the rate limit answer it
with the HTTP envelope (401, 429) before any upgrade. Browsers cannot set headers on a WebSocket,
so without the header the key is taken from the start message instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
import threading
import time
from typing import Any

from flask import Blueprint, Flask, current_app, g
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server

from ..analysis.analyzer import SpeechEmotionAnalyzer
from ..analysis.streaming import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN,
    STREAM_SEGMENTS,
    Event,
    Level,
    SegmentClosed,
    StreamError,
    StreamLimits,
    StreamSession,
    StreamStart,
    StreamSummary,
    parse_message,
    parse_start,
)
from ..config import Settings
from ..views import assessment_json, delivery_json, final_result_json, summary_json
from . import metrics
from .auth import ApiKeys

logger = logging.getLogger(__name__)

bp = Blueprint("stream", __name__)
sock = Sock()
EXTENSION = "emotion_streams"


class Streams:
    """The streams of this process: how many may be open at once, and the per-stream limits."""

    def __init__(self, settings: Settings) -> None:
        # Each stream holds a request thread for its whole length; one is kept for HTTP requests.
        self.capacity = max(0, min(settings.max_streams, settings.threads - 1))
        self.slots = threading.BoundedSemaphore(self.capacity) if self.capacity else None
        self.limits = StreamLimits(
            max_seconds=settings.stream_max_seconds,
            idle_seconds=settings.stream_idle_seconds,
            max_frame_bytes=int(settings.stream_max_frame_kb * 1000),
            max_speed=settings.stream_max_speed,
        )
        self.segments = dataclasses.replace(STREAM_SEGMENTS, vad=settings.vad)
        self.settings = settings


def init_app(app: Flask, settings: Settings, analyzer: SpeechEmotionAnalyzer) -> Streams:
    """Add ``GET /stream``."""
    streams = Streams(settings)
    app.extensions[EXTENSION] = streams
    # simple-websocket drops a message over this size with close code 1009 before we see it; ours
    # (STREAM_MAX_FRAME_KB, with its own message) is checked first for anything up to twice the limit.
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS", {"max_message_size": 2 * streams.limits.max_frame_bytes + 65_536, "ping_interval": 20}
    )
    app.register_blueprint(bp)
    return streams


# -- events as JSON -------------------------------------------------------------------------------


def event_json(event: Event, lang: str) -> dict[str, Any]:
    """One server message."""
    if isinstance(event, Level):
        return {"type": "level", "time": event.time, "speaking": event.speaking, "db": event.db}
    if isinstance(event, SegmentClosed):
        result = event.result
        return {
            "type": "segment",
            "index": event.index,
            "start": event.start,
            "end": event.end,
            "final_result": final_result_json(result.ensemble, lang) if result.ensemble else None,
            "interview_assessment": assessment_json(result.assessment, lang) if result.assessment else None,
            "delivery": delivery_json(result.delivery) if result.delivery else None,
            "processing_time": round(result.processing_time, 4),
        }
    return {
        "type": "summary",
        "duration": round(event.duration, 3),
        "segments": event.segments,
        "session_summary": summary_json(event.summary, lang) if event.summary else None,
        "delivery": delivery_json(event.delivery) if event.delivery else None,
    }


def _send(ws: Server, message: dict[str, Any]) -> None:
    ws.send(json.dumps(message, ensure_ascii=False))


# -- the route ----------------------------------------------------------------------------------


@sock.route("/stream", bp=bp)
def stream(ws: Server) -> None:
    streams: Streams = current_app.extensions[EXTENSION]
    outcome = "error"
    if streams.slots is None or not streams.slots.acquire(blocking=False):
        _fail(ws, _too_many(streams))
        metrics.record_stream_end("TOO_MANY_STREAMS")
        return
    metrics.record_stream_start()
    try:
        outcome = _serve(ws, streams)
    finally:
        streams.slots.release()
        metrics.record_stream_end(outcome)


def _too_many(streams: Streams) -> StreamError:
    if streams.capacity == 0:
        message = (
            "This server takes no streams: THREADS=1 leaves no request thread for them; set THREADS above MAX_STREAMS."
        )
    else:
        message = (
            f"All {streams.capacity} streams of this server process are in use (MAX_STREAMS, at most THREADS - 1); "
            "retry in a while, or add workers or instances."
        )
    return StreamError(message, error_code="TOO_MANY_STREAMS", close_code=CLOSE_TRY_AGAIN)


def _serve(ws: Server, streams: Streams) -> str:
    """Run one stream to its end; return how it ended (``ok`` or an error code) for the metrics."""
    settings = streams.settings
    session: StreamSession | None = None
    lang = settings.default_lang
    try:
        start = _receive_start(ws, streams)
        lang = start.lang
        _check_key(start)
        analyzer: SpeechEmotionAnalyzer = current_app.config["ANALYZER"]
        _check_models(analyzer)
        session = StreamSession(analyzer, start, streams.limits, streams.segments)
        logger.info("stream %s started (%s, %s Hz)", g.get("request_id"), start.format, start.sample_rate)
        _send(
            ws,
            {
                "type": "ready",
                "format": start.format,
                "sample_rate": start.sample_rate or None,
                "lang": start.lang,
                "candidate_id": start.candidate_id,
                "emotion_inference": analyzer.emotion_inference,
                "limits": {
                    "max_seconds": streams.limits.max_seconds,
                    "idle_seconds": streams.limits.idle_seconds,
                    "max_frame_bytes": streams.limits.max_frame_bytes,
                    "max_speed": streams.limits.max_speed,
                },
            },
        )
        while True:
            message = _receive(ws, streams.limits.idle_seconds)
            if message is None:
                raise _idle(streams)
            if isinstance(message, bytes | bytearray):
                events = session.feed(bytes(message))
            else:
                kind = parse_message(message)["type"]
                if kind != "stop":
                    raise StreamError(
                        f'Unexpected message type {kind!r} after start: send binary audio frames, then {{"type": "stop"}}.',
                        error_code="INVALID_MESSAGE",
                    )
                events = session.stop()
            for event in events:
                body = event_json(event, lang)
                if isinstance(event, SegmentClosed):
                    metrics.record_stream_segment(event.result)
                elif isinstance(event, StreamSummary):
                    body["candidate_id"] = start.candidate_id
                    logger.info(
                        "stream %s done: %.1f s, %d segments", g.get("request_id"), event.duration, event.segments
                    )
                _send(ws, body)
            if session.stopped:
                _close(ws, CLOSE_NORMAL, "stream complete")
                return "ok"
    except StreamError as exc:
        logger.info("stream %s ended: %s %s", g.get("request_id"), exc.error_code, exc.message)
        _fail(ws, exc)
        return exc.error_code
    except ConnectionClosed:
        return "client_closed"
    except Exception:  # noqa: BLE001 - the socket is upgraded: no HTTP handler can answer; tell the client, then log
        logger.exception("stream %s failed", g.get("request_id"))
        _fail(ws, StreamError("Internal error; the request id in the logs helps find it.", error_code="INTERNAL_ERROR",
                              close_code=CLOSE_INTERNAL))  # fmt: skip
        return "INTERNAL_ERROR"
    finally:
        if session is not None:
            session.close()


def _idle(streams: Streams) -> StreamError:
    return StreamError(
        f"Nothing was received for {streams.limits.idle_seconds:g} s (STREAM_IDLE_SECONDS); send audio frames "
        'continuously while recording, and {"type": "stop"} at the end.',
        error_code="IDLE_TIMEOUT",
        close_code=4408,
    )


def _receive(ws: Server, seconds: float) -> bytes | str | None:
    """The next message, or None after ``seconds`` of silence; ConnectionClosed once the socket is.

    Waits in steps of at most a second: when simple-websocket closes a connection itself (a
    message over ``max_message_size``: 1009), it can wake a waiting ``receive`` before it marks
    the socket closed, and that ``receive`` would then wait out the whole idle timeout, holding
    one of the MAX_STREAMS slots for nothing (found by bench/hostile_run.py).
    """
    deadline = time.monotonic() + seconds
    while True:
        message = ws.receive(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        if message is not None:
            return message
        if not ws.connected:
            raise ConnectionClosed(ws.close_reason, ws.close_message)
        if time.monotonic() >= deadline:
            return None


def _receive_start(ws: Server, streams: Streams) -> StreamStart:
    message = _receive(ws, streams.limits.idle_seconds)
    if message is None:
        raise _idle(streams)
    if not isinstance(message, str):
        raise StreamError(
            'The first message must be the text message {"type": "start", "sample_rate": 16000, "format": "pcm16"}, '
            "not audio: send start before the first frame.",
            error_code="MISSING_START",
        )
    return parse_start(parse_message(message), streams.settings.default_lang)


def _check_key(start: StreamStart) -> None:
    """Accept the header's key (checked before the upgrade) or the start message's."""
    api_keys: ApiKeys = current_app.config["API_KEYS"]
    if not api_keys.enabled or g.get("api_key_id") is not None:
        return
    g.api_key_id = api_keys.identify(start.api_key)
    if g.api_key_id is None:
        problem = "is not an accepted key" if start.api_key else "is missing"
        raise StreamError(
            f'The API key {problem}: send it in the X-API-Key header of the handshake or as "api_key" in the '
            "start message (keys are set with API_KEYS or API_KEYS_FILE).",
            error_code="UNAUTHORIZED",
            close_code=4401,
        )


def _check_models(analyzer: SpeechEmotionAnalyzer) -> None:
    if analyzer.loading:
        raise StreamError(
            "The models are still loading; retry in a few seconds.",
            error_code="MODELS_LOADING",
            close_code=CLOSE_TRY_AGAIN,
        )
    if analyzer.emotion_inference and not analyzer.models:
        raise StreamError(
            "No emotion model is loaded; see /health.", error_code="MODEL_UNAVAILABLE", close_code=CLOSE_TRY_AGAIN
        )


def _fail(ws: Server, error: StreamError) -> None:
    try:
        _send(ws, {"type": "error", "error_code": error.error_code, "message": error.message})
        _close(ws, error.close_code, error.error_code)
    except ConnectionClosed:
        pass  # the client left first


def _close(ws: Server, code: int, reason: str) -> None:
    """Close, and wait (briefly) for the client's answering close frame before the server drops the
    connection: dropped at once, a browser may see the reset first and report 1006, not ``code``."""
    ws.close(code, reason)
    ws.thread.join(timeout=2)
    if ws.mode == "werkzeug":
        # Werkzeug's development server writes an HTTP response after the handler returns; on a
        # socket still open (its file object keeps it so) the client would read it as a bad frame.
        with contextlib.suppress(OSError):
            ws.sock.shutdown(socket.SHUT_RDWR)


OPENAPI_PATHS = {
    "/stream": {
        "get": {
            "summary": "Live analysis over a WebSocket",
            "description": (
                "Upgrade to a WebSocket (Connection: Upgrade, Upgrade: websocket). The API key goes in the "
                'X-API-Key header or, for browsers, as "api_key" in the start message.\n\n'
                "Client to server: first a text message "
                '{"type": "start", "sample_rate": 16000, "format": "pcm16", "lang": "en", "candidate_id": "...", '
                '"api_key": "..."} (format pcm16: 16-bit little-endian mono at sample_rate; webm: a browser '
                "MediaRecorder's Opus chunks, sample_rate ignored); then binary audio frames of any size up to "
                'STREAM_MAX_FRAME_KB; then {"type": "stop"}.\n\n'
                "Server to client, JSON text messages with a type: ready (the accepted parameters and limits); "
                "level (time, speaking, db) four times a second of audio; segment (index, start, end in seconds "
                "from the start of the stream, final_result and interview_assessment as in /analyze, delivery) "
                "when the voice activity detector closes a stretch of speech; summary (duration, segments, "
                "session_summary as in /batch_analyze, delivery of the whole stream) after stop, then close "
                "code 1000; error (error_code, message) followed by a close code: 4400 invalid message, start "
                "or audio, 4401 missing or wrong key, 4408 idle (STREAM_IDLE_SECONDS), 4413 frame too large "
                "(STREAM_MAX_FRAME_KB) or stream too long (STREAM_MAX_SECONDS), 4429 faster than "
                "STREAM_MAX_SPEED x real time, 1013 too many streams (MAX_STREAMS) or models not ready, 1011 "
                "internal error. With EMOTION_INFERENCE=off, final_result, interview_assessment and "
                "session_summary are null and delivery metrics remain."
            ),
            "parameters": [
                {"name": "Upgrade", "in": "header", "required": True, "schema": {"const": "websocket"}},
            ],
            "security": [{"ApiKey": []}, {}],
            "responses": {
                "101": {"description": "Switching protocols: the WebSocket protocol above follows."},
                "400": {
                    "description": "Not a WebSocket handshake.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                },
                "401": {
                    "description": "The X-API-Key header is not an accepted key.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                },
                "429": {
                    "description": "Rate limit (RATE_LIMITS).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                },
            },
        }
    }
}
