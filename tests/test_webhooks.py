"""Webhooks: signatures, retries with backoff, and the target allow-list (loopback receivers only)."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emotion_service.http.app import create_app
from emotion_service.jobs.webhooks import (
    SIGNATURE_HEADER,
    InvalidWebhook,
    WebhookPolicy,
    WebhookSender,
    signature_header,
    verify,
)

from .signals import wav
from .test_jobs import poll

SECRET = "s3cret-for-tests-only-0123456789"
CLIP = wav(2.0)


class Receiver:
    """An HTTP server on 127.0.0.1 that answers the statuses it is given, then 200, and keeps what it got."""

    def __init__(self, statuses=()) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.done = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status < 300:
                    receiver.done.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


LOCAL = WebhookPolicy(("127.0.0.1",), allow_private=True)


def test_signature_verifies_with_the_secret_only():
    body = b'{"job_id": "x"}'
    header = signature_header(SECRET, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, body, now=1_700_000_010)
    assert not verify("another-secret-0123456789", header, body, now=1_700_000_010)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_010)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 3600)  # replayed an hour later
    assert not verify(SECRET, "garbage", body)


def test_retries_on_500_with_backoff_then_succeeds():
    with Receiver([500, 503]) as receiver:
        sender = WebhookSender(SECRET, LOCAL, attempts=4, backoff=0.05)
        assert sender.deliver(receiver.url, {"job_id": "abc", "status": "done"}, "job.done")
    assert len(receiver.calls) == 3
    deliveries = {headers["X-Emotion-Delivery"] for headers, _ in receiver.calls}
    assert len(deliveries) == 1  # one delivery id across retries: receivers can de-duplicate
    for headers, body in receiver.calls:
        assert verify(SECRET, headers[SIGNATURE_HEADER], body)
        assert headers["X-Emotion-Event"] == "job.done" and json.loads(body)["job_id"] == "abc"


def test_gives_up_after_its_attempts_and_on_client_errors_and_redirects():
    with Receiver([500, 500, 500]) as receiver:
        assert not WebhookSender(SECRET, LOCAL, attempts=2, backoff=0.01).deliver(receiver.url, {}, "job.done")
        assert len(receiver.calls) == 2
    with Receiver([404]) as receiver:
        assert not WebhookSender(SECRET, LOCAL, attempts=3, backoff=0.01).deliver(receiver.url, {}, "job.done")
        assert len(receiver.calls) == 1
    with Receiver([302]) as receiver:  # a redirect to the metadata service is not followed
        assert not WebhookSender(SECRET, LOCAL, attempts=3, backoff=0.01).deliver(receiver.url, {}, "job.done")
        assert len(receiver.calls) == 1


def public(host, port):
    return ["93.184.216.34"]


def private(host, port):
    return ["10.0.0.7"]


@pytest.mark.parametrize(
    "url,policy",
    [
        ("http://169.254.169.254/latest/meta-data/", WebhookPolicy(("*",))),
        ("http://169.254.169.254/", WebhookPolicy(("169.254.169.254",))),  # listed, but private not allowed
        ("http://127.0.0.1/", WebhookPolicy(("127.0.0.1",))),
        ("http://127.0.0.1/", WebhookPolicy(("*",), allow_private=True)),  # private needs an exact entry
        ("http://[::1]/", WebhookPolicy(("::1",))),
        ("http://[::ffff:127.0.0.1]/", WebhookPolicy(("::ffff:127.0.0.1",))),
        ("file:///etc/passwd", WebhookPolicy(("*",))),
        ("ftp://hooks.example.com/x", WebhookPolicy(("hooks.example.com",), resolver=public)),
        ("https://evil.com/x", WebhookPolicy(("hooks.example.com", "*.example.com"), resolver=public)),
        ("https://example.com.evil.com/x", WebhookPolicy(("*.example.com",), resolver=public)),
        ("https://a.example.com/x", WebhookPolicy(("*.example.com",), resolver=private)),
        ("https://user:pw@hooks.example.com/x", WebhookPolicy(("hooks.example.com",), resolver=public)),
        ("https://hooks.example.com/x", WebhookPolicy(())),  # no allow-list: no webhooks
        ("not a url", WebhookPolicy(("*",))),
    ],
)
def test_refused_targets(url, policy):
    with pytest.raises(InvalidWebhook):
        policy.check(url)


def test_allowed_targets():
    assert WebhookPolicy(("*.example.com",), resolver=public).check("https://a.b.example.com/h")
    assert WebhookPolicy(("hooks.example.com",), resolver=public).check("https://hooks.example.com:8443/h?x=1")
    assert WebhookPolicy(("*",), resolver=public).check("http://anything.test/")
    assert LOCAL.check("http://127.0.0.1:9/")


@pytest.fixture
def hook_settings(settings, tmp_path):
    return replace(
        settings, job_dir=str(tmp_path / "jobs"), webhook_secret=SECRET, rate_limits="off",
        webhook_allowed_hosts=("127.0.0.1", "*.example.com"), webhook_allow_private=True,
    )  # fmt: skip


@pytest.fixture
def hook_client(hook_settings, analyzer):
    app = create_app(hook_settings, analyzer)
    yield app.test_client()
    app.extensions["emotion_jobs"].close()


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "ftp://127.0.0.1/x", "http://10.1.2.3/",
     "http://localhost.evil.net/", "https://example.com/"],
)  # fmt: skip
def test_refused_webhook_urls_are_400_at_submission(hook_client, hook_settings, url):
    response = hook_client.post("/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav"), "webhook_url": url})
    body = response.get_json()
    assert response.status_code == 400 and body["error_code"] == "INVALID_WEBHOOK_URL", body
    assert "webhook_url" in body["message"]


def test_loopback_needs_webhook_allow_private(settings, analyzer, tmp_path):
    strict = replace(settings, job_dir=str(tmp_path), webhook_secret=SECRET, webhook_allowed_hosts=("127.0.0.1",))
    app = create_app(strict, analyzer)
    response = app.test_client().post("/jobs", json={"audio_data": "AAAA", "webhook_url": "http://127.0.0.1/"})
    assert response.status_code == 400 and "WEBHOOK_ALLOW_PRIVATE" in response.get_json()["message"]


def test_without_allowed_hosts_webhooks_are_refused(client):
    response = client.post("/jobs", json={"audio_data": "AAAA", "webhook_url": "https://hooks.example.com/"})
    assert response.status_code == 400 and "WEBHOOK_ALLOWED_HOSTS" in response.get_json()["message"]


def test_a_finished_job_calls_its_webhook_signed(hook_client):
    with Receiver([500]) as receiver:
        response = hook_client.post(
            "/jobs", data={"audio": (io.BytesIO(CLIP), "a.wav"), "webhook_url": receiver.url, "lang": "en"}
        )
        assert response.status_code == 202, response.get_json()
        job_id = response.get_json()["data"]["job_id"]
        assert poll(hook_client, job_id)["status"] == "done"
        # The first call got 500; the retry comes after the backoff (2 s).
        assert receiver.done.wait(15), receiver.calls
    headers, body = receiver.calls[-1]
    assert len(receiver.calls) == 2
    assert verify(SECRET, headers[SIGNATURE_HEADER], body)
    payload = json.loads(body)
    assert payload["job_id"] == job_id and payload["status"] == "done" and payload["result"]["timeline"]
    assert headers["X-Emotion-Event"] == "job.done"
