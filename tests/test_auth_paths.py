"""No route outside AUTH_EXEMPT can be reached without a key by a variant of its path.

Each protected route (``/``, ``/analyze``, ``/batch_analyze``, ``/jobs``, ``/jobs/<id>``) is
requested without a key through ``gunicorn emotion_api:app`` directly and through the shipped
nginx config (its ``/api/emotion/`` prefix included), spelled with a trailing slash, in other
case, percent-encoded (letters, slashes, dots), with doubled slashes, dot segments that climb
out of an exempt route (``/health/../analyze``, ``/docs/%2e%2e/analyze``), a ``;`` parameter,
a NUL or a space, and with the key in the query string instead of the header. Every answer is
401 UNAUTHORIZED, a 404 of a route that does not exist, an exempt route's own answer, or a bare
400 from gunicorn or nginx: never the protected route's handler.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote

from .server import free_port, running
from .test_nginx import nginx

KEY = "auth-paths-test-key-77a1c0"
JOB = "0123456789abcdef0123456789abcdef"  # a well-formed id that does not exist
PROTECTED = [("GET", "/"), ("POST", "/analyze"), ("POST", "/batch_analyze"), ("POST", "/jobs"),
             ("GET", f"/jobs/{JOB}"), ("DELETE", f"/jobs/{JOB}")]  # fmt: skip
# What only the protected handlers answer (a request that reached one without a key).
HANDLER_CODES = {"MISSING_AUDIO", "UNSUPPORTED_MEDIA_TYPE", "INVALID_JSON", "JOB_NOT_FOUND", "EMPTY_AUDIO"}


def variants(path: str) -> list[str]:
    """Spellings of ``path`` that a server or proxy might route to it."""
    rest = path[1:]
    encoded_all = "/" + "".join(f"%{ord(c):02X}" if c != "/" else "/" for c in rest)
    found = [
        path, path + "/", path.upper(), path.title(), "//" + rest, path.replace("/", "//"),
        "/" + quote(rest, safe=""),  # slashes as %2F
        encoded_all, encoded_all.lower(),
        "/./" + rest, "/health/../" + rest, "/health/%2E%2E/" + rest, "/health%2F..%2F" + rest,
        "/docs/../" + rest, "/docs/%2e%2e/" + rest, "/docs/..%2F" + rest, "/metrics/..;/" + rest,
        path + ";x", path + "%00", path + "%20", path + "/.", path + "?X-API-Key=" + KEY,
        path + "?api_key=" + KEY,
    ]  # fmt: skip
    return sorted(set(found))


def _ask(port: int, method: str, path: str) -> tuple[int, dict | None, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = b"{}" if method == "POST" else None
        headers = {"Content-Type": "application/json"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
    finally:
        connection.close()
    try:
        envelope = json.loads(text)
    except ValueError:
        envelope = None
    return response.status, envelope if isinstance(envelope, dict) else None, text


def _exempt_answer(status: int, envelope: dict | None, text: str) -> bool:
    """/health, /metrics or /docs answering (they need no key)."""
    if status != 200:
        return False
    health = envelope is not None and isinstance(envelope.get("data"), dict) and "status" in envelope["data"]
    return health or "emotion_" in text or "<html" in text.lower() or '"openapi"' in text


def check(port: int, prefix: str = "") -> dict[str, int]:
    """Request every variant of every protected route without a key; return counts by status."""
    counts: dict[str, int] = {}
    for method, path in PROTECTED:
        for variant in variants(path):
            status, envelope, text = _ask(port, method, prefix.rstrip("/") + variant)
            counts[str(status)] = counts.get(str(status), 0) + 1
            where = (method, prefix + variant, status, text[:200])
            assert not 200 <= status < 300 or _exempt_answer(status, envelope, text), where
            if envelope is not None and status != 200:
                assert envelope.get("success") is False, where
                assert envelope.get("error_code") not in HANDLER_CODES, where
                assert status in (401, 404, 405), where
            elif envelope is None:
                assert status in (400, 404, 405) or _exempt_answer(status, envelope, text), where
    return counts


def test_no_path_variant_reaches_a_protected_route_without_a_key(tmp_path):
    ports = [free_port()]
    env = {"API_KEYS": KEY, "AUTH": "on", "RATE_LIMITS": "off", "JOB_DIR": str(tmp_path / "jobs")}
    with running(["-m", "gunicorn", "emotion_api:app"], ports[0], env=env), nginx(tmp_path, ports) as (url, _):
        direct = check(ports[0])
        proxy_port = int(url.rsplit(":", 1)[1])
        proxied = check(proxy_port)
        prefixed = check(proxy_port, "/api/emotion")
        print(f"gunicorn: {direct}; nginx: {proxied}; nginx /api/emotion/: {prefixed}")
        # The key still opens them, directly and through the prefix: the checks above mean something.
        for port, prefix in ((ports[0], ""), (proxy_port, "/api/emotion")):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", prefix + "/analyze", body=b"{}",
                               headers={"Content-Type": "application/json", "X-API-Key": KEY})  # fmt: skip
            answer = connection.getresponse()
            assert answer.status == 400 and json.loads(answer.read())["error_code"] == "MISSING_AUDIO"
            connection.close()
