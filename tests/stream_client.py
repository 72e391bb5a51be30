"""A WebSocket test client for /stream, and an in-process server to point it at."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import numpy as np
import websocket

from .server import threaded
from .signals import RATE, voice_like


def answers(count: int = 3, seconds: float = 1.6, gap: float = 1.2, rate: int = RATE) -> np.ndarray:
    """``count`` speech-like answers separated by silences (a little noise), float32."""
    rng = np.random.default_rng(7)
    parts = [0.002 * rng.standard_normal(int(0.5 * rate)).astype(np.float32)]
    for i in range(count):
        parts.append(voice_like(seconds, f0=120 + 40 * i, rate=rate, seed=i))
        parts.append(0.002 * rng.standard_normal(int(gap * rate)).astype(np.float32))
    return np.concatenate(parts)


def pcm16(signal: np.ndarray) -> bytes:
    return (np.clip(signal, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def serving(app) -> contextlib.AbstractContextManager[str]:
    """Serve ``app`` on a loopback port with werkzeug's threaded server; yield its ws:// URL."""
    return threaded(app, "ws")


OPENED: list[websocket.WebSocket] = []


def connect(url: str, headers: dict[str, str] | None = None, timeout: float = 20) -> websocket.WebSocket:
    """Open /stream; :func:`close_all` closes every socket opened (the tests' fixture calls it)."""
    ws = websocket.create_connection(
        url + "/stream", header=[f"{k}: {v}" for k, v in (headers or {}).items()], timeout=timeout
    )
    OPENED.append(ws)
    return ws


def close_all() -> None:
    while OPENED:
        OPENED.pop().shutdown()


def start_message(**fields: Any) -> str:
    return json.dumps({"type": "start", "sample_rate": RATE, "format": "pcm16", "lang": "en", **fields})


def receive_all(ws: websocket.WebSocket) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes; and the close code."""
    messages = []
    while True:
        frame = ws.recv_frame()  # raw frames: no close frame sent back to a server that may be gone
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
            with contextlib.suppress(websocket.WebSocketException, OSError):  # answer it, as browsers do
                ws.send_close()
            return messages, code
        if frame.opcode == websocket.ABNF.OPCODE_TEXT:
            messages.append(json.loads(frame.data.decode("utf-8")))


def stream_pcm(
    ws: websocket.WebSocket, audio: bytes, chunk: int = 3200, speed: float | None = None, stop: bool = True
) -> None:
    """Send PCM in ``chunk``-byte frames, at ``speed`` x real time (None: as fast as possible)."""
    started = time.monotonic()
    for offset in range(0, len(audio), chunk):
        ws.send_binary(audio[offset : offset + chunk])
        if speed:
            due = started + (offset + chunk) / 2 / RATE / speed
            time.sleep(max(0.0, due - time.monotonic()))
    if stop:
        ws.send(json.dumps({"type": "stop"}))
