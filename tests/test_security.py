"""Security: every route needs a key, keys are compared in constant time, no field reaches the
filesystem, and every answer carries safe headers.

Webhook targets (only allowed hosts, never private or metadata addresses, no redirects) are
tested in test_webhooks.py (test_refused_targets, test_loopback_needs_webhook_allow_private,
test_without_allowed_hosts_webhooks_are_refused). The dependency audit runs in CI (.ci/run).
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from werkzeug import formparser
from werkzeug.routing import Rule

from emotion_service.http import auth
from emotion_service.http.app import create_app

from .server import free_port, running
from .signals import wav

KEY = "security-test-key-8c1d3f"
CLIP = wav(1.0)
# What AUTH_EXEMPT (default health,metrics,docs,console) lets through without a key: endpoint names.
EXEMPT = {"service.health", "service.metrics", "docs.openapi", "docs.docs", "docs.docs_asset",
          # the console's files hold no data (a WebSocket /stream takes the key in its start message: test_stream)
          "console.console_asset"}  # fmt: skip
PARAMETERS = {
    "job_id": "0123456789abcdef0123456789abcdef",
    "name": "swagger-ui.css",
    "filename": "x.css",
    "candidate_id": "cand-42",
}


@pytest.fixture
def keyed_app(settings, analyzer, tmp_path):
    app = create_app(replace(settings, api_keys=(KEY,), rate_limits="off", job_dir=str(tmp_path / "jobs")), analyzer)
    yield app
    app.extensions["emotion_jobs"].close()


def _url(rule: Rule) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: PARAMETERS[m.group(1)], rule.rule)


def _routes(app) -> list[tuple[Rule, str]]:
    return sorted(((rule, method) for rule in app.url_map.iter_rules() for method in rule.methods), key=str)


def test_every_route_needs_a_key_except_the_exemptions(keyed_app):
    client = keyed_app.test_client()
    routes = _routes(keyed_app)
    assert len(routes) >= 25  # every rule with GET, HEAD, POST, DELETE and OPTIONS
    for rule, method in routes:
        with client.open(_url(rule), method=method) as response:
            if rule.endpoint in EXEMPT:
                assert response.status_code != 401, (rule.rule, method)
            else:
                assert response.status_code == 401, (rule.rule, method, response.status_code)
                if method != "HEAD":
                    assert response.get_json()["error_code"] == "UNAUTHORIZED"
        with client.open(_url(rule), method=method, headers={"X-API-Key": KEY[:-1] + "x"}) as wrong:
            assert (wrong.status_code == 401) == (rule.endpoint not in EXEMPT), (rule.rule, method)
        with client.open(_url(rule), method=method, headers={"X-API-Key": KEY}) as right:
            assert right.status_code != 401, (rule.rule, method)


def test_exemptions_cover_only_the_configured_endpoints(settings, analyzer, tmp_path):
    app = create_app(replace(settings, api_keys=(KEY,), auth_exempt=(), job_dir=str(tmp_path)), analyzer)
    client = app.test_client()
    for rule, method in _routes(app):
        with client.open(_url(rule), method=method) as response:
            assert response.status_code == 401, (rule.rule, method)
    app.extensions["emotion_jobs"].close()


def test_keys_are_compared_with_compare_digest_over_equal_length_digests(keyed_app, monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    client = keyed_app.test_client()
    for presented, status in ((KEY, 200), ("x", 401), (KEY + "-much-longer-than-the-key" * 10, 401)):
        calls.clear()
        assert client.get("/", headers={"X-API-Key": presented}).status_code == status
        assert len(calls) == 1  # every accepted key (here one) is compared, whatever the outcome
        assert all(len(a) == len(b) == 32 for a, b in calls)  # SHA-256 digests: length says nothing


def _multipart(name: str, audio: bytes) -> bytes:
    head = f'--b0undary\r\nContent-Disposition: form-data; name="audio"; filename="{name}"\r\n\r\n'.encode()
    return head + audio + b"\r\n--b0undary--\r\n"


def test_uploads_never_touch_the_disk_whatever_their_file_name(keyed_app, tmp_path, monkeypatch):
    """Multipart files stay in memory (werkzeug spools those over 500 kB to a temporary
    file), and a job's recording is stored under its random id, never under a name from the
    request."""

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was spooled to disk")

    monkeypatch.setattr(formparser, "SpooledTemporaryFile", no_disk)
    client = keyed_app.test_client()
    headers = {"X-API-Key": KEY, "Content-Type": "multipart/form-data; boundary=b0undary"}
    big = wav(30.0)  # 960 kB
    for name in ("../../../../tmp/pwned.wav", "/etc/passwd", "..\\..\\x.wav", "a%00b.wav"):
        response = client.post("/analyze", data=_multipart(name, big), headers=headers)
        assert response.status_code == 200, response.get_json()
        response = client.post("/jobs", data=_multipart(name, CLIP), headers=headers)
        assert response.status_code == 202, response.get_json()
    audio = tmp_path / "jobs" / "audio"
    assert all(re.fullmatch(r"[0-9a-f]{32}(\.part)?", path.name) for path in audio.iterdir())
    assert not (tmp_path / "pwned.wav").exists() and not Path("/tmp/pwned.wav").exists()


@pytest.mark.parametrize(
    "path",
    ["/jobs/..%2F..%2Fsentinel", "/jobs/..%2Fsentinel", "/jobs/%2E%2E", "/jobs/..", "/jobs/sentinel",
     "/jobs/" + "0" * 31 + "/", "/jobs/0123456789ABCDEF0123456789ABCDEF"],
)  # fmt: skip
def test_job_ids_cannot_name_files(keyed_app, tmp_path, path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("keep me")
    (tmp_path / "jobs" / "sentinel").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "jobs" / "sentinel").write_text("keep me too")
    client = keyed_app.test_client()
    for method in ("GET", "DELETE"):
        response = client.open(path, method=method, headers={"X-API-Key": KEY})
        assert response.status_code in (404, 405), (path, method, response.status_code)
        assert response.get_json()["error_code"] in ("JOB_NOT_FOUND", "NOT_FOUND", "METHOD_NOT_ALLOWED")
    assert sentinel.read_text() == "keep me" and (tmp_path / "jobs" / "sentinel").read_text() == "keep me too"


@pytest.mark.parametrize("path", ["/docs/..%2F..%2Fapi.py", "/docs/../../api.py", "/docs/%2e%2e/%2e%2e/api.py",
                                  "/static/..%2Fapi.py", "/docs/..%2F..%2F..%2Fetc%2Fpasswd"])  # fmt: skip
def test_docs_assets_cannot_leave_their_directory(keyed_app, path):
    response = keyed_app.test_client().get(path, headers={"X-API-Key": KEY})
    assert response.status_code == 404, (path, response.status_code)
    assert b"import" not in response.data and b"root:" not in response.data


@pytest.mark.parametrize(
    "options",
    [{"models_dir": "/tmp/evil"}, {"max_seconds": 10**9}, {"job_dir": "../x"}, {"models_config": "/etc/passwd"}],
)
def test_jobs_accept_no_server_side_option(keyed_app, options):
    """Only speech_lang and ranges come from clients; limits and paths are the server's."""
    response = keyed_app.test_client().post(
        "/jobs", json={"audio_data": base64.b64encode(CLIP).decode(), "options": options}, headers={"X-API-Key": KEY}
    )
    assert response.status_code == 400 and response.get_json()["error_code"] == "INVALID_OPTIONS"


def test_error_answers_carry_nosniff_too(keyed_app, monkeypatch):
    client = keyed_app.test_client()
    headers = {"X-API-Key": KEY}
    answers = [
        client.get("/health"),  # 200, exempt
        client.get("/"),  # 401
        client.get("/no/such/path", headers=headers),  # 404
        client.put("/analyze", headers=headers),  # 405
        client.post("/analyze", data="x" * 5_000_000, content_type="audio/wav", headers=headers),  # 413
        client.post("/analyze", data="x", content_type="text/plain", headers=headers),  # 415
    ]
    monkeypatch.setattr(keyed_app.config["ANALYZER"], "analyze", lambda *a, **k: 1 / 0)
    answers.append(client.post("/analyze", json={"audio_data": base64.b64encode(CLIP).decode()}, headers=headers))
    assert [a.status_code for a in answers] == [200, 401, 404, 405, 413, 415, 500]
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.status_code
        assert answer.headers["X-Request-ID"]


def test_gunicorn_answers_name_no_versions(tmp_path):
    """Through the real server: no version in Server (gunicorn's bare name), nosniff on every app
    answer, including errors; and gunicorn's own 400s (bad requests) carry no version either."""
    env = {"API_KEYS": KEY, "LOG_FILE": "", "JOB_DIR": str(tmp_path / "jobs")}
    with running(["-m", "gunicorn", "emotion_api:app"], free_port(), env=env, ready=("healthy",)) as (url, _):
        answers = [
            requests.get(url + "/health", timeout=10),
            requests.get(url + "/", timeout=10),
            requests.get(url + "/nope", headers={"X-API-Key": KEY}, timeout=10),
            requests.post(url + "/analyze", data=b"x", headers={"X-API-Key": KEY, "Content-Type": "x/y"}, timeout=10),
            requests.post(url + "/analyze", files={"audio": ("a.wav", CLIP)}, headers={"X-API-Key": KEY}, timeout=30),
        ]
        assert [a.status_code for a in answers] == [200, 401, 404, 415, 200]
        for answer in answers:
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert not re.search(r"\d", answer.headers.get("Server", "")), answer.headers.get("Server")
            assert "X-Powered-By" not in answer.headers
        bad = requests.get(url + "/health", headers={"Bad Header": "x"}, timeout=10)  # a space in a header name
        assert bad.status_code == 400 and not re.search(r"\d", bad.headers.get("Server", ""))
