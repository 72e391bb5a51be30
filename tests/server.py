"""Start real server processes on loopback for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running(
    command: Sequence[str],
    port: int,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    ready: Sequence[str] = ("healthy", "degraded", "unhealthy"),
    output: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``python <command>`` from the repo root until /health on ``port`` reports a status in ``ready``.

    What it prints goes to ``output`` when given (readable while it runs), else to a temporary file.
    """
    # LOG_FILE empty: the server logs to the output file below, not to emotion_api.log in the checkout.
    loopback = {"HOST": "127.0.0.1", "PORT": str(port), "HF_HUB_OFFLINE": "1", "LOG_FILE": ""}
    full_env = {**os.environ, **loopback, **(env or {})}
    # Output goes to a file, not a pipe: nobody reads a pipe while the server runs, and a server
    # that logged more than a pipe holds (64 kB: a few hundred access lines) would block on it.
    with open(output, "w+") if output else tempfile.TemporaryFile("w+") as printed:
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=full_env,
            stdout=printed,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        try:
            while True:
                if process.poll() is not None:
                    printed.seek(0)
                    raise AssertionError(f"server exited with {process.returncode}:\n{printed.read()}")
                try:
                    status = requests.get(url + "/health", timeout=5).json()["data"]["status"]
                    if status in ready:
                        break
                except (requests.RequestException, ValueError):
                    pass
                if time.monotonic() > deadline:
                    printed.seek(0)
                    raise AssertionError(f"server not ready after {timeout} s:\n{printed.read()}")
                time.sleep(0.3)
            yield url, process
        finally:
            stop(process)
            printed.seek(0)
            process.output = printed.read()  # type: ignore[attr-defined]  # what it printed, for assertions


@contextlib.contextmanager
def redis_server(port: int, directory: Path) -> Iterator[subprocess.Popen]:
    """A private redis-server on 127.0.0.1:``port`` (no persistence), until it answers PING.

    Stopped at the end even if a test left it suspended (SIGSTOP). CI installs redis-server; a
    missing one fails the test, never skips it.
    """
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: apt-get install -y redis-server (.ci/run does it)"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
         str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    break
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM until continued
            process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def threaded(app, scheme: str = "http") -> Iterator[str]:
    """``app`` on werkzeug's threaded server on a loopback port (a real socket, a thread per
    request); yields its base URL (``scheme`` ``http`` or ``ws``)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
