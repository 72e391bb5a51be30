"""Live /stream: delay from the end of an answer's speech to its ``segment`` message, and how many
real-time streams one machine holds.

A gunicorn server (one worker, the default bundled model, ``THREADS`` = streams + 2) is started on
loopback; then, for each level of concurrency, that many clients stream at once, each sending 100 ms
pcm16 frames at real time (a frame leaves when its last sample would have been recorded, as from
a microphone). Each stream is made of answers separated by 1.5 s of silence:

- with the RAVDESS corpus (``RAVDESS_DIR``, default ``../shared/data/ravdess``): clips of the
  held-out actors 21-24, with the default VAD (silero); an answer's speech ends at its last 10 ms
  frame within 35 dB of its loudest one;
- without it: generated speech-like tones (``VAD=energy``, since Silero rightly hears no speech in
  them); the speech ends where the tone ends.

The delay of a segment is the time its message arrives minus the time the last sample of its
speech was recorded; it includes the VAD's wait for ``min_silence`` (0.5 s on streams), up to one
frame (100 ms) and the analysis. A level "holds" when every stream finished without an error and
the 95th percentile of delay is at most 1 s.

    python bench/bench_stream.py [--levels 1,4,8,12] [--seconds 20] [--vad silero|energy]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests
import soundfile as sf
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpuinfo import cpu_info, describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RATE = 16_000
FRAME = 1600  # 100 ms
GAP = 1.5
HELD_OUT = ("ravdess_21", "ravdess_22", "ravdess_23", "ravdess_24")


def corpus_dir() -> Path:
    return Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess"))


def _tone(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t))) / RATE
    envelope = (0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))) ** 1.5
    return (
        0.25 * envelope * sum(np.sin(k * phase) / k for k in range(1, 8)) + 0.003 * rng.standard_normal(t.size)
    ).astype(np.float32)


def _speech_end(clip: np.ndarray) -> float:
    n = len(clip) // 160
    db = 10 * np.log10(np.mean(clip[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    return float((np.flatnonzero(db > db.max() - 35)[-1] + 1) * 160 / RATE)


def build_stream(seconds: float, seed: int, clips: list[Path] | None) -> tuple[np.ndarray, list[float]]:
    """A stream of answers and silences, and the times where each answer's speech ends."""
    rng = np.random.default_rng(seed)
    quiet = lambda s: (0.001 * rng.standard_normal(int(s * RATE))).astype(np.float32)  # noqa: E731
    parts, ends, t = [quiet(0.5)], [], 0.5
    while t < seconds - 3:
        if clips:
            clip, _ = sf.read(clips[int(rng.integers(len(clips)))], dtype="float32")
            clip = clip if clip.ndim == 1 else clip.mean(axis=1)
            ends.append(t + _speech_end(clip))
        else:
            clip = _tone(float(rng.uniform(1.5, 3.0)), float(rng.uniform(100, 220)), int(rng.integers(1 << 30)))
            ends.append(t + len(clip) / RATE)
        parts += [clip, quiet(GAP)]
        t += len(clip) / RATE + GAP
    return np.concatenate(parts), ends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(streams: int, vad: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "1", "THREADS": str(streams + 2),
           "MAX_STREAMS": str(streams), "RATE_LIMITS": "off", "LOG_FILE": "", "LOG_LEVEL": "WARNING", "VAD": vad,
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "emotion_api:app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(requests.RequestException, ValueError):
                if requests.get(url + "/health", timeout=2).json()["data"]["status"] == "healthy":
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.3)
        yield url.replace("http://", "ws://")
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_stream(url: str, audio: np.ndarray, ends: list[float], out: dict) -> None:
    pcm = (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    delays: list[float] = []
    errors: list[str] = []
    ws = websocket.create_connection(url + "/stream", timeout=60)
    started = 0.0

    def read() -> None:
        while True:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if frame.opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            message = json.loads(frame.data)
            if message["type"] == "error":
                errors.append(message["error_code"])
            elif message["type"] == "segment":
                arrived = time.monotonic()
                # the answer whose speech end is nearest the segment's unpadded end
                end = min(ends, key=lambda e: abs(e - (message["end"] - 0.1)))
                if abs(end - (message["end"] - 0.1)) < 0.5:
                    delays.append(arrived - (started + end))

    try:
        ws.send(json.dumps({"type": "start", "sample_rate": RATE, "format": "pcm16", "lang": "en"}))
        if json.loads(ws.recv())["type"] != "ready":
            raise SystemExit("no ready message")
        reader = threading.Thread(target=read)
        reader.start()
        started = time.monotonic()
        for offset in range(0, len(pcm), FRAME * 2):
            time.sleep(max(0.0, started + (offset / 2 + FRAME) / RATE - time.monotonic()))
            ws.send_binary(pcm[offset : offset + FRAME * 2])
        ws.send(json.dumps({"type": "stop"}))
        reader.join(timeout=120)
    except (websocket.WebSocketException, OSError) as exc:
        errors.append(type(exc).__name__)
    finally:
        ws.shutdown()
    out.update(delays=delays, errors=errors, answers=len(ends))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,8,12", help="concurrent streams to try, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each stream")
    parser.add_argument("--vad", choices=("silero", "energy"), help="default: silero with RAVDESS, else energy")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    root = corpus_dir()
    clips = None
    if (root / "manifest.csv").exists():
        with (root / "manifest.csv").open(newline="", encoding="utf-8") as handle:
            clips = [root / row["path"] for row in csv.DictReader(handle) if row["speaker"] in HELD_OUT]
    vad = args.vad or ("silero" if clips else "energy")
    source = "ravdess held-out actors" if clips else "generated tones"
    print(f"audio: {source}; VAD={vad}; {os.cpu_count()} cores; streams of {args.seconds:g} s", file=sys.stderr)
    report: dict = {"audio": source, "vad": vad, "cores": os.cpu_count(), "seconds": args.seconds, "levels": []}
    with server(max(levels), vad) as url:
        for n in levels:
            outs: list[dict] = [{} for _ in range(n)]
            threads = [
                threading.Thread(target=run_stream, args=(url, *build_stream(args.seconds, i, clips), outs[i]))
                for i in range(n)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            delays = np.array([d for o in outs for d in o.get("delays", [])])
            errors = [e for o in outs for e in o.get("errors", [])]
            answers = sum(o.get("answers", 0) for o in outs)
            row = {
                "streams": n,
                "answers": answers,
                "segments_matched": int(delays.size),
                "delay_p50": round(float(np.percentile(delays, 50)), 3) if delays.size else None,
                "delay_p95": round(float(np.percentile(delays, 95)), 3) if delays.size else None,
                "delay_max": round(float(delays.max()), 3) if delays.size else None,
                "errors": errors,
            }
            row["holds"] = bool(not errors and delays.size >= 0.8 * answers and row["delay_p95"] <= 1.0)
            report["levels"].append(row)
            print(
                f"{n:>3} streams: delay p50 {row['delay_p50']} s, p95 {row['delay_p95']} s, max {row['delay_max']} s; "
                f"{row['segments_matched']}/{answers} answers; errors {errors or 'none'}; holds: {row['holds']}",
                file=sys.stderr,
            )
    held = [row["streams"] for row in report["levels"] if row["holds"]]
    report["max_streams_holding"] = max(held) if held else 0
    print(describe(), flush=True)
    print(json.dumps({**report, "cpu": cpu_info()}))


if __name__ == "__main__":
    main()
