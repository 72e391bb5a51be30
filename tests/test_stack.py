"""Issue 4's whole check: two API processes behind real nginx, sharing one real Redis, on loopback.

Keys and rate limits hold across both processes, a repeated recording is a cache hit whichever
process answers it, the metrics of the two add up to what was sent, and no audio reaches the
logs or the disk.
"""

from __future__ import annotations

import base64
import contextlib

import requests
from prometheus_client.parser import text_string_to_metric_families

from .server import free_port, running
from .signals import encode, voice_like
from .test_nginx import nginx
from .test_production import redis_url  # noqa: F401  (a fixture: a private redis-server)

KEY_A, KEY_B, KEY_C = "a" * 32, "b" * 32, "c" * 32


def requests_total(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "emotion_http_requests_total" and sample.labels["endpoint"] in ("/analyze", "/health")
    )


def test_two_processes_behind_nginx_share_keys_limits_and_cache(tmp_path, redis_url):  # noqa: F811
    redis, _ = redis_url
    ports = [free_port(), free_port()]
    tmpdirs = [tmp_path / "tmp0", tmp_path / "tmp1"]
    for d in tmpdirs:
        d.mkdir()
    common = {
        "API_KEYS": f"{KEY_A},{KEY_B},{KEY_C}",
        "AUTH": "on",
        "REDIS_URL": redis,
        "RATE_LIMITS": "5/minute",
        "TRUSTED_PROXIES": "1",
        "AUTH_EXEMPT": "health,metrics",
    }
    with contextlib.ExitStack() as stack:
        for i, port in enumerate(ports):
            env = {**common, "LOG_FILE": str(tmp_path / f"api{i}.log"), "TMPDIR": str(tmpdirs[i]),
                   "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"prom{i}")}  # fmt: skip
            stack.enter_context(running(["start_api_server.py"], port, env=env, ready=("healthy",)))
        url, nginx_tmp = stack.enter_context(nginx(tmp_path / "nginx", ports))
        # The readiness polls of /health already counted; measure from here.
        baseline = sum(requests_total(f"http://127.0.0.1:{p}") for p in ports)

        audio = encode(voice_like(2.0, seed=11), format="FLAC")
        body = {"audio_data": base64.b64encode(audio).decode()}
        # Keys: none or a wrong one is refused by either process.
        for headers in ({}, {"X-API-Key": "z" * 32}, {}, {"X-API-Key": "z" * 32}):
            response = requests.post(url + "/analyze", json=body, headers=headers, timeout=30)
            assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHORIZED"

        # Cache: the same recording, answered by one process then the other (round robin).
        first = requests.post(url + "/analyze", json=body, headers={"X-API-Key": KEY_A}, timeout=60).json()
        second = requests.post(
            url + "/analyze", files={"audio": ("a.flac", audio)}, headers={"X-API-Key": KEY_A}, timeout=60
        ).json()
        assert first["success"] and second["success"]
        assert (first["data"]["cached"], second["data"]["cached"]) == (False, True)
        assert second["data"]["final_result"] == first["data"]["final_result"]

        # Limits: 5 a minute per key, counted in Redis across both processes.
        statuses = [requests.get(url + "/", headers={"X-API-Key": KEY_B}, timeout=10).status_code for _ in range(7)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429], statuses
        limited = requests.get(url + "/", headers={"X-API-Key": KEY_B}, timeout=10)
        assert limited.json()["error_code"] == "RATE_LIMITED" and int(limited.headers["Retry-After"]) > 0
        assert requests.get(url + "/", headers={"X-API-Key": KEY_C}, timeout=10).status_code == 200  # other key

        # Metrics: the two processes' counts of /analyze and /health add up to what was sent.
        sent_health = 6
        for _ in range(sent_health):
            requests.get(url + "/health", timeout=10)
        scraped = sum(requests_total(f"http://127.0.0.1:{p}") for p in ports)
        assert scraped - baseline == 4 + 2 + sent_health

    # Privacy: no audio in any log, nothing left in the processes' temporary directories or nginx's.
    marker = body["audio_data"][100:160]
    for log in tmp_path.glob("api*.log"):
        text = log.read_text()
        assert marker not in text and KEY_A not in text
    for d in tmpdirs:
        assert not any(p.is_file() for p in d.rglob("*")), list(d.rglob("*"))
    assert not any(p.is_file() for p in (nginx_tmp / "client_body").rglob("*"))
