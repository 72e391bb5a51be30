"""The shipped nginx config, for real: nginx on loopback in front of two API processes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import requests

from .server import ROOT, free_port, running
from .signals import encode, voice_like

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def site_config(upstreams: list[int], port: int) -> str:
    """The repository's nginx/emotion-api.conf with loopback upstreams and listen address."""
    conf = (ROOT / "nginx" / "emotion-api.conf").read_text()
    servers = "\n    ".join(f"server 127.0.0.1:{p};" for p in upstreams)
    for old, new in (("server emotion-api:5000;", servers), ("listen 80;", f"listen 127.0.0.1:{port};")):
        assert old in conf, f"nginx/emotion-api.conf no longer contains {old!r}; update this test"
        conf = conf.replace(old, new)
    return conf


@contextlib.contextmanager
def nginx(tmp: Path, upstreams: list[int]) -> Iterator[tuple[str, Path]]:
    assert Path(NGINX).exists(), "nginx is not installed: apt-get install nginx-light (.ci/run does it)"
    port = free_port()
    (tmp / "logs").mkdir(parents=True)
    (tmp / "site.conf").write_text(site_config(upstreams, port))
    temp_paths = " ".join(
        f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp / "nginx.conf").write_text(
        f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
events {{ worker_connections 128; }}
http {{
    {temp_paths}
    log_format upstream '$upstream_addr $status $request_length';
    access_log {tmp}/logs/access.log upstream;
    include {tmp}/site.conf;
}}
"""
    )
    check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(url + "/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield url, tmp
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_nginx_balances_two_api_processes_and_passes_large_uploads(tmp_path):
    ports = [free_port(), free_port()]
    env = {"MAX_UPLOAD_MB": "25", "MAX_REQUEST_MB": "64"}
    with (
        running(["-m", "gunicorn", "emotion_api:app"], ports[0], env=env),
        running(["-m", "gunicorn", "emotion_api:app"], ports[1], env=env),
        nginx(tmp_path, ports) as (url, tmp),
    ):
        for _ in range(20):
            response = requests.get(url + "/health", timeout=10)
            assert response.headers["Content-Type"].startswith("application/json")
            assert "/" not in response.headers.get("Server", "")  # server_tokens off: no version
            assert response.json()["data"]["status"]
        # The guide's prefix reaches the same API.
        assert requests.get(url + "/api/emotion/health", timeout=10).json()["data"]["status"]

        # 24 MB upload: under the service's MAX_UPLOAD_MB, so nginx must let it through to the API.
        clip = encode(voice_like(30.0), rate=48_000, format="WAV", subtype="FLOAT")
        big = clip + bytes(24_000_000 - len(clip))
        response = requests.post(url + "/analyze", files={"audio": ("big.wav", big)}, timeout=120)
        body = response.json()
        assert response.status_code != 413 and body.get("error_code") != "PAYLOAD_TOO_LARGE", body
        assert body["success"], body  # the 30 s clip inside is analysed
        # Over the service's limit: the API's own answer, passed through.
        over = requests.post(url + "/analyze", files={"audio": ("over.wav", bytes(30_000_000))}, timeout=120)
        assert over.status_code == 413 and over.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        # Over nginx's limit: nginx answers, in the API's envelope.
        huge = requests.post(
            url + "/analyze", data=bytes(70_000_000), headers={"Content-Type": "audio/wav"}, timeout=120
        )
        assert huge.status_code == 413 and huge.json()["error_code"] == "PAYLOAD_TOO_LARGE"

        # Nothing was buffered to disk by nginx.
        assert not any(p.is_file() for p in (tmp / "client_body").rglob("*"))

    lines = (tmp_path / "logs" / "access.log").read_text().splitlines()
    upstreams = Counter(line.split()[0] for line in lines if line.split()[0] != "-")
    assert set(upstreams) == {f"127.0.0.1:{p}" for p in ports}, upstreams
    assert min(upstreams.values()) >= 8  # round robin over 20+ requests


def test_nginx_answers_in_the_envelope_when_no_api_is_up(tmp_path):
    with nginx(tmp_path, [free_port()]) as (url, _):
        response = requests.get(url + "/health", timeout=15)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.json()["error_code"] == "UPSTREAM_UNAVAILABLE"
