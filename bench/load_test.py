"""Load test: N concurrent clients send a fixed number of /analyze requests to a real server.

    python bench/load_test.py                       # starts `gunicorn emotion_api:app` itself
    python bench/load_test.py --url http://127.0.0.1:5000 --clients 8 --requests 10000

Reports throughput, latency percentiles, errors (by status) and, when it started the server
itself, the server's memory (RSS of the gunicorn master and workers) before and after. Each
request carries a different clip (the result cache would otherwise answer most of them): clips
are generated speech-like signals, encoded as WAV, each request's made distinct. The server it
starts has RATE_LIMITS=off (all requests come from one address). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpuinfo import cpu_info, describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def clip(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    rate = 16_000
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(100, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3, 5) * t))) ** 1.5
    signal_ = (0.25 * envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, signal_, rate, format="WAV")
    return buffer.getvalue()


def rss_bytes(pid: int, largest: bool = False) -> int:
    """Resident memory of a process and its children (Linux /proc); ``largest``: of the largest one."""
    total = most = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    value = int(line.split()[1]) * 1024
                    total, most = total + value, max(most, value)
    return most if largest else total


@contextlib.contextmanager
def server(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "HF_HUB_OFFLINE": "1", **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "emotion_api:app"], cwd=ROOT, env=full_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(requests.RequestException, ValueError, KeyError):
                if requests.get(url + "/health", timeout=2).json()["data"]["status"] == "healthy":
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the server did not become healthy")
            time.sleep(0.3)
        yield url, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def run(url: str, clients: int, total: int, seconds: float, headers: dict[str, str]) -> dict[str, object]:
    clips = [clip(seconds, seed) for seed in range(16)]

    def payload(i: int) -> str:
        # A distinct clip per request (the result cache would answer repeats): the first samples
        # after the 44-byte WAV header carry the request number.
        data = bytearray(clips[i % len(clips)])
        data[44:52] = i.to_bytes(8, "little")
        return base64.b64encode(bytes(data)).decode()

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    retry_after_missing = 0
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        nonlocal retry_after_missing
        session = requests.Session()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            body = {"audio_data": payload(i), "lang": "en"}
            started = time.perf_counter()
            try:
                response = session.post(url + "/analyze", json=body, headers=headers, timeout=120)
                status = str(response.status_code)
                if response.status_code in (429, 503) and "Retry-After" not in response.headers:
                    retry_after_missing += 1
            except requests.RequestException as exc:
                status = type(exc).__name__
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = statuses.get("200", 0)
    p = np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {
        "clients": clients,
        "requests": total,
        "clip_seconds": seconds,
        "ok": ok,
        "errors": total - ok,
        "statuses": dict(statuses),
        "retry_after_missing": retry_after_missing,
        "wall_seconds": round(wall, 3),
        "requests_per_second": round(total / wall, 2),
        "audio_seconds_per_second": round(ok * seconds / wall, 1),
        "latency_p50_ms": round(float(p[0]) * 1000, 1),
        "latency_p95_ms": round(float(p[1]) * 1000, 1),
        "latency_p99_ms": round(float(p[2]) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start gunicorn emotion_api:app here)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"))
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server it starts")
    args = parser.parse_args(argv)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}

    if args.url:
        report = run(args.url, args.clients, args.requests, args.seconds, headers)
    else:
        # One client address would hit the default per-address rate limit (120/minute) at once:
        # the server it starts has no limit unless --env RATE_LIMITS=... says otherwise.
        env = {"RATE_LIMITS": "off", **dict(item.split("=", 1) for item in args.env)}
        with server(env) as (url, process):
            run(url, args.clients, min(50, args.requests), args.seconds, headers)  # warm up
            before = rss_bytes(process.pid)
            report = run(url, args.clients, args.requests, args.seconds, headers)
            after = rss_bytes(process.pid)
            largest = rss_bytes(process.pid, largest=True)
        report.update(rss_before_mb=round(before / 2**20, 1), rss_after_mb=round(after / 2**20, 1),
                      rss_growth_mb=round((after - before) / 2**20, 1),
                      rss_largest_process_mb=round(largest / 2**20, 1))  # fmt: skip
    for key, value in report.items():
        print(f"{key:>26}: {value}", file=sys.stderr)
    print(describe(), flush=True)
    print(json.dumps({**report, "cpu": cpu_info()}))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
