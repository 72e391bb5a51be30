"""Start real server processes on loopback for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(command: Sequence[str], port: int, env: dict[str, str] | None = None, timeout: float = 120.0,
            ready: Sequence[str] = ("healthy", "degraded", "unhealthy")) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``python <command>`` from the repo root until /health on ``port`` reports a status in ``ready``."""
    full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "HF_HUB_OFFLINE": "1", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{process.stdout.read()}")  # type: ignore[union-attr]
            try:
                status = requests.get(url + "/health", timeout=5).json()["data"]["status"]
                if status in ready:
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after {timeout} s")
            time.sleep(0.3)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert process.stdout is not None
        process.output = process.stdout.read()  # type: ignore[attr-defined]  # what it printed, for assertions
        process.stdout.close()
