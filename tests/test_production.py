"""Production concerns: API keys, rate limits, /metrics and JSON logs.

In-process tests use the stand-in models of conftest; the end-to-end tests start real servers on
loopback (two gunicorn workers for /metrics; two server processes sharing one real Redis for the
rate limits) with a models config whose one model cannot load, so they start in seconds.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from emotion_service.config import Settings
from emotion_service.errors import ConfigError
from emotion_service.http.app import create_app
from emotion_service.http.auth import load_api_keys
from emotion_service.http.logs import configure_logging

from .server import ROOT, free_port, redis_server, running
from .signals import wav

CLIP = wav(2.0)
CLIP_B64 = base64.b64encode(CLIP).decode()
KEY = "test-key-7f3a9c2e51d04b8a"
OTHER_KEY = "other-key-0b1c2d3e4f5a6b7c"


def _app(settings: Settings, analyzer, **changes):
    from dataclasses import replace

    return create_app(replace(settings, **changes), analyzer)


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["success"] is False and body["error_code"] == code and body["message"]
    return body


# -- API keys -----------------------------------------------------------------------------------


def test_keys_are_required_when_configured(settings, analyzer):
    client = _app(settings, analyzer, api_keys=(KEY, OTHER_KEY)).test_client()
    body = _error(client.post("/analyze", json={"audio_data": CLIP_B64}), 401, "UNAUTHORIZED")
    assert "X-API-Key" in body["message"] and "missing" in body["message"]
    body = _error(
        client.post("/analyze", json={"audio_data": CLIP_B64}, headers={"X-API-Key": "nope"}), 401, "UNAUTHORIZED"
    )
    assert "not an accepted key" in body["message"] and "nope" not in body["message"]
    _error(client.get("/", headers={"X-API-Key": KEY + "x"}), 401, "UNAUTHORIZED")
    _error(client.get("/no/such/path"), 401, "UNAUTHORIZED")  # unknown paths reveal nothing without a key
    for key in (KEY, OTHER_KEY):
        assert client.post("/analyze", json={"audio_data": CLIP_B64}, headers={"X-API-Key": key}).status_code == 200
    assert client.get("/health").status_code == 200  # exempt by default
    assert client.get("/metrics").status_code == 200


def test_exemptions_are_configurable(settings, analyzer):
    client = _app(settings, analyzer, api_keys=(KEY,), auth_exempt=()).test_client()
    _error(client.get("/health"), 401, "UNAUTHORIZED")
    _error(client.get("/metrics"), 401, "UNAUTHORIZED")
    assert client.get("/health", headers={"X-API-Key": KEY}).status_code == 200
    assert Settings.from_env({"AUTH_EXEMPT": "none"}).auth_exempt == ()
    assert Settings.from_env({"AUTH_EXEMPT": "health, /metrics,index"}).auth_exempt == ("health", "metrics", "index")


def test_auth_is_off_on_loopback_without_keys_and_refused_elsewhere(settings, analyzer):
    assert _app(settings, analyzer).test_client().post("/analyze", json={"audio_data": CLIP_B64}).status_code == 200
    assert load_api_keys(Settings()).describe() == "API keys: off (loopback only)"
    assert load_api_keys(Settings(api_keys=(KEY, OTHER_KEY))).describe() == "API keys: on (2 keys)"
    for host in ("0.0.0.0", "::", "10.1.2.3", "api.example.com"):
        with pytest.raises(ConfigError, match=r"HOST=.*API_KEYS.*AUTH=off"):
            Settings.from_env({"HOST": host})
    assert not Settings.from_env({"HOST": "0.0.0.0", "AUTH": "off"}).auth_enabled
    assert Settings.from_env({"HOST": "0.0.0.0", "API_KEYS": KEY}).auth_enabled
    assert Settings.from_env({"HOST": "::1"}).auth == "auto"
    with pytest.raises(ConfigError, match="AUTH=on needs API keys"):
        Settings.from_env({"AUTH": "on"})


def test_keys_file(tmp_path, settings, analyzer):
    path = tmp_path / "keys"
    path.write_text(f"# staging\n{KEY}  # team a\n\n{OTHER_KEY}\n")
    keys = load_api_keys(Settings(api_keys_file=str(path), api_keys=("third-key-123456",)))
    assert keys.enabled and keys.count == 3
    assert keys.identify(OTHER_KEY) and keys.identify("# staging") is None
    client = _app(settings, analyzer, api_keys_file=str(path)).test_client()
    assert client.get("/", headers={"X-API-Key": OTHER_KEY}).status_code == 200
    path.write_text("# only comments\n")
    with pytest.raises(ConfigError, match="API_KEYS_FILE=.*holds no key"):
        load_api_keys(Settings(api_keys_file=str(path)))
    with pytest.raises(ConfigError, match="API_KEYS_FILE=.*cannot be read"):
        load_api_keys(Settings(api_keys_file=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    "env,value",
    [
        ("AUTH", "maybe"),
        ("API_KEYS", "has space"),
        ("AUTH_EXEMPT", "analyze"),
        ("RATE_LIMITS", "lots"),
        ("REDIS_URL", "http://localhost"),
        ("TRUSTED_PROXIES", "-1"),
        ("WORKERS", "0"),
        ("LOG_MAX_MB", "0"),
        ("LOG_BACKUPS", "x"),
    ],
)
def test_invalid_production_settings_name_the_variable(env, value):
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({env: value})


def test_secret_settings_are_never_echoed():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"API_KEYS": "s3cret-key,bad key"})
    assert "s3cret" not in str(info.value) and "API_KEYS" in str(info.value)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_URL": "http://user:hunter2@redis"})
    assert "hunter2" not in str(info.value)
    assert KEY not in repr(Settings(api_keys=(KEY,)))


def test_start_script_refuses_an_exposed_host_without_keys():
    env = {**os.environ, "HOST": "0.0.0.0"}
    env.pop("API_KEYS", None), env.pop("API_KEYS_FILE", None), env.pop("AUTH", None)
    done = subprocess.run(
        [sys.executable, "start_api_server.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "HOST=0.0.0.0" in done.stderr and "API_KEYS" in done.stderr and "AUTH=off" in done.stderr


# -- rate limits ----------------------------------------------------------------------------------


def test_rate_limit_per_key_with_retry_after(settings, analyzer):
    client = _app(settings, analyzer, api_keys=(KEY, OTHER_KEY), rate_limits="3/minute").test_client()
    for _ in range(3):
        assert client.get("/", headers={"X-API-Key": KEY}).status_code == 200
    response = client.get("/", headers={"X-API-Key": KEY})
    body = _error(response, 429, "RATE_LIMITED")
    assert "3 per 1 minute" in body["message"] and "Retry-After" in body["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert response.headers["X-Request-ID"]
    assert client.get("/", headers={"X-API-Key": OTHER_KEY}).status_code == 200  # another key, another count
    for _ in range(5):
        assert client.get("/health").status_code == 200  # probes are never limited
        assert client.get("/metrics").status_code == 200


def test_requests_without_a_valid_key_are_limited_per_address(settings, analyzer):
    client = _app(settings, analyzer, api_keys=(KEY,), rate_limits="2/minute").test_client()
    # Guessing keys: each wrong key is a fresh header, but the count is per client address.
    assert [client.get("/", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(4)] == [401, 401, 429, 429]
    assert client.get("/", headers={"X-API-Key": KEY}).status_code == 200


def test_forwarded_for_is_trusted_only_from_configured_proxies(settings, analyzer):
    def statuses(client) -> list[int]:
        return [client.get("/", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(3)]

    assert statuses(_app(settings, analyzer, rate_limits="1/minute").test_client()) == [200, 429, 429]
    assert statuses(_app(settings, analyzer, rate_limits="1/minute", trusted_proxies=1).test_client()) == [
        200,
        200,
        200,
    ]


def test_rate_limits_off(settings, analyzer):
    client = _app(settings, analyzer, rate_limits="off").test_client()
    assert all(client.get("/").status_code == 200 for _ in range(30))
    assert Settings.from_env({"RATE_LIMITS": "OFF"}).rate_limits == "off"
    assert Settings.from_env({"RATE_LIMITS": "10/minute;1000/hour"}).rate_limits == "10/minute;1000/hour"


def test_unreachable_redis_falls_back_to_memory_per_process(settings, analyzer, caplog):
    """Documented behaviour: requests are still served and limited, each process counting alone."""
    closed = free_port()  # nothing listens there
    client = _app(settings, analyzer, rate_limits="2/minute", redis_url=f"redis://127.0.0.1:{closed}/0").test_client()
    with caplog.at_level(logging.WARNING):
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
    assert "falling back to in-memory" in caplog.text


# -- metrics --------------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_count_requests_models_audio_and_batches(settings, analyzer):
    client = _app(settings, analyzer).test_client()
    before = {
        "health": _sample("emotion_http_requests_total", endpoint="/health", method="GET", status="200"),
        "analyze": _sample("emotion_http_requests_total", endpoint="/analyze", method="POST", status="200"),
        "unmatched": _sample("emotion_http_requests_total", endpoint="unmatched", method="GET", status="404"),
        "audio": _sample("emotion_audio_seconds_total"),
        "standin": _sample("emotion_model_inference_seconds_count", model="standin"),
        "batches": _sample("emotion_batch_segments_count"),
        "segments": _sample("emotion_batch_segments_sum"),
        "latency": _sample("emotion_http_request_duration_seconds_count", endpoint="/analyze"),
    }
    for _ in range(3):
        client.get("/health")
    client.get("/no/such/thing")
    client.post("/analyze", json={"audio_data": CLIP_B64})
    client.post("/batch_analyze", json={"audio_segments": [CLIP_B64, CLIP_B64, "not base64!"]})
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        _sample("emotion_http_requests_total", endpoint="/health", method="GET", status="200") == before["health"] + 3
    )
    assert (
        _sample("emotion_http_requests_total", endpoint="/analyze", method="POST", status="200")
        == before["analyze"] + 1
    )
    assert (
        _sample("emotion_http_requests_total", endpoint="unmatched", method="GET", status="404")
        == before["unmatched"] + 1
    )
    assert _sample("emotion_http_request_duration_seconds_count", endpoint="/analyze") == before["latency"] + 1
    assert _sample("emotion_audio_seconds_total") == pytest.approx(before["audio"] + 6.0, abs=0.01)
    assert _sample("emotion_model_inference_seconds_count", model="standin") == before["standin"] + 3
    assert _sample("emotion_batch_segments_count") == before["batches"] + 1
    assert _sample("emotion_batch_segments_sum") == before["segments"] + 3
    assert _sample("emotion_model_loaded", model="four") == 1
    assert "emotion_cache_hits_total" in text and "/no/such/thing" not in text


# -- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def json_logs(tmp_path) -> Iterator[Path]:
    """Configure the service's logging into a file for one test, then put pytest's back."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    path = tmp_path / "api.log"
    configure_logging(Settings(log_file=str(path), log_max_mb=1, log_backups=2))
    try:
        yield path
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:], root.level = saved
        logging.getLogger("werkzeug").setLevel(logging.NOTSET)


def test_logs_are_json_lines_without_audio_or_keys(json_logs, settings, analyzer):
    client = _app(settings, analyzer, api_keys=(KEY,)).test_client()
    response = client.post(
        "/analyze", json={"audio_data": CLIP_B64}, headers={"X-API-Key": KEY, "X-Request-ID": "req-42"}
    )
    assert response.status_code == 200
    client.post("/analyze", data={"audio": (io.BytesIO(CLIP), "a.wav")}, headers={"X-API-Key": KEY})
    client.post("/analyze", json={"audio_data": CLIP_B64}, headers={"X-API-Key": OTHER_KEY})  # rejected key
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = json_logs.read_text("utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    access = [r for r in records if r["logger"] == "emotion_service.access"]
    assert len(access) == 3
    first = access[0]
    assert {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration",
    } <= set(first)
    assert (first["request_id"], first["method"], first["path"], first["status"]) == ("req-42", "POST", "/analyze", 200)
    assert first["bytes_in"] > len(CLIP_B64) and first["bytes_out"] > 0 and first["duration"] > 0
    assert access[2]["status"] == 401
    assert any(r["logger"] == "emotion_service.http.app" and r.get("request_id") for r in records)  # the 401 rejection
    assert KEY not in text and OTHER_KEY not in text
    assert CLIP_B64[1000:1100] not in text and "UklGR" not in text  # no base64 of the WAV (it starts "RIFF")


def test_log_file_can_be_disabled_and_must_be_writable(tmp_path):
    assert Settings.from_env({"LOG_FILE": ""}).log_file == ""
    with pytest.raises(ConfigError, match="LOG_FILE="):
        configure_logging(Settings(log_file=str(tmp_path / "no" / "such" / "dir" / "api.log")))


# -- real servers on loopback ---------------------------------------------------------------------

BROKEN_MODELS = '[presets.broken]\nghost = 1.0\n\n[models.ghost]\nbackend = "none"\nsource = ""\n'


@contextlib.contextmanager
def _server(tmp_path: Path, name: str, env: dict[str, str], timeout: float = 90.0) -> Iterator[tuple[str, Path]]:
    """Run start_api_server.py on a free loopback port until /health answers; yield its URL and output file."""
    models = tmp_path / "models.toml"
    models.write_text(BROKEN_MODELS)
    env = {
        "MODELS_CONFIG": str(models),
        "MODEL_PRESET": "broken",
        "DEVICE": "cpu",
        "LOG_FILE": str(tmp_path / f"{name}.log"),
        **env,
    }
    output = tmp_path / f"{name}.out"
    with running(["start_api_server.py"], free_port(), env=env, timeout=timeout, output=output) as (url, _):
        yield url, output


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _requests_total(samples, endpoint: str, status: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "emotion_http_requests_total" and ("endpoint", endpoint) in labels and ("status", status) in labels
    )


def _worker_pids(log: Path) -> set[int]:
    return {r["pid"] for r in map(json.loads, log.read_text().splitlines()) if r["logger"] == "emotion_service.access"}


def _wait_for_workers(output: Path, count: int, timeout: float = 60.0) -> None:
    """Each worker prints the ready line once it has booted (gunicorn's post_worker_init)."""
    deadline = time.monotonic() + timeout
    while output.read_text().count("Speech emotion API") < count:
        assert time.monotonic() < deadline, f"{count} workers not ready:\n{output.read_text()}"
        time.sleep(0.1)


def test_metrics_add_up_over_two_gunicorn_workers(tmp_path):
    n_bad, n_unauthorized = 12, 7
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_99999.db").write_bytes(b"left over from an earlier run")  # must be wiped at start
    env = {
        "WORKERS": "2",
        "THREADS": "2",
        "API_KEYS": KEY,
        "RATE_LIMITS": "off",
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    log = tmp_path / "metrics.log"
    with _server(tmp_path, "metrics", env) as (url, output):
        _wait_for_workers(output, 2)
        # New connections each time; the kernel hands them to either worker's accept(). Keep going
        # (bounded) until both workers have served some, so the sums below cover two processes.
        n_health = 0
        while n_health < 30 or (len(_worker_pids(log)) < 2 and n_health < 600):
            assert requests.get(url + "/health", timeout=10).status_code == 503  # the model cannot load
            n_health += 1
        for _ in range(n_bad):
            response = requests.post(
                url + "/analyze", data="hello", headers={"X-API-Key": KEY, "Content-Type": "text/plain"}, timeout=10
            )
            assert response.status_code == 415
        for _ in range(n_unauthorized):
            assert requests.post(url + "/analyze", json={"audio_data": CLIP_B64}, timeout=10).status_code == 401
        # Every scrape, whichever worker answers it, sees the sum over both workers.
        for _ in range(6):
            samples = _scrape(url)
            assert _requests_total(samples, "/analyze", "415") == n_bad
            assert _requests_total(samples, "/analyze", "401") == n_unauthorized
            # The readiness polls before the loop are /health requests too.
            assert _requests_total(samples, "/health", "503") >= n_health
            assert samples[("emotion_model_loaded", (("model", "ghost"),))] == 0
        pids = _worker_pids(log)
        assert not (shared / "counter_99999.db").exists()

        # A worker dies and gunicorn replaces it: its counts stay, its live gauge goes.
        dead = min(pids)
        os.kill(dead, signal.SIGKILL)
        _wait_for_workers(output, 3)
        samples = _scrape(url)
        assert _requests_total(samples, "/analyze", "415") == n_bad
        assert _requests_total(samples, "/analyze", "401") == n_unauthorized
        assert not list(shared.glob(f"gauge_live*_{dead}.db")) and list(shared.glob("gauge_livemin_*.db"))
        printed = output.read_text()
    assert len(pids) == 2, f"the requests reached only workers {pids}; the test needs both"
    assert "API keys: on (1 key)" in printed and "2 workers" in printed
    text = log.read_text()
    assert KEY not in text and CLIP_B64[:200] not in text and CLIP_B64[-200:] not in text


def test_health_count_is_exact_over_two_workers(tmp_path):
    """The readiness polls are counted too: with them known, the sum is exact."""
    env = {"WORKERS": "2", "THREADS": "2", "RATE_LIMITS": "off", "LOG_FILE": ""}
    with _server(tmp_path, "exact", env) as (url, output):
        _wait_for_workers(output, 2)
        start = _requests_total(_scrape(url), "/health", "503")
        for _ in range(25):
            requests.get(url + "/health", timeout=10)
        assert _requests_total(_scrape(url), "/health", "503") == start + 25
        assert _requests_total(_scrape(url), "/metrics", "200") >= 2
    assert "API keys: off (loopback only)" in output.read_text()


@pytest.fixture
def redis_url(tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A private redis-server on a free loopback port (CI installs redis-server; a missing one fails)."""
    port = free_port()
    with redis_server(port, tmp_path) as process:
        yield f"redis://127.0.0.1:{port}/0", process


def test_rate_limit_holds_across_two_servers_sharing_redis(tmp_path, redis_url):
    url_redis, redis_process = redis_url
    env = {"API_KEYS": KEY, "RATE_LIMITS": "5/minute", "REDIS_URL": url_redis, "LOG_FILE": ""}
    with _server(tmp_path, "a", env) as (a, out_a), _server(tmp_path, "b", env) as (b, _):
        headers = {"X-API-Key": KEY}
        statuses = [requests.get(server + "/", headers=headers, timeout=10).status_code for server in (a, a, a, b, b)]
        assert statuses == [200] * 5
        refused = requests.get(b + "/", headers=headers, timeout=10)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error_code"] == "RATE_LIMITED" and int(refused.headers["Retry-After"]) >= 1
        assert requests.get(a + "/", headers=headers, timeout=10).status_code == 429
        assert requests.get(a + "/health", timeout=10).status_code == 503  # not limited (and no model)

        # Redis goes away: requests are still served, now counted in each process's memory.
        redis_process.terminate()
        redis_process.wait(timeout=10)
        assert requests.get(a + "/", headers=headers, timeout=10).status_code == 200
        printed = out_a.read_text()
    assert "Rate limits: 5/minute per key or client, in Redis" in printed
    assert re.search(r"falling back to in-memory", printed)
