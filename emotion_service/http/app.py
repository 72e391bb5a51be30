"""The HTTP layer's application factory: the spec's REST API over :class:`SpeechEmotionAnalyzer`.

Only :mod:`emotion_service.http` knows about Flask. Each resource is a blueprint (:mod:`.service`,
:mod:`.analysis`, :mod:`.docs`, :mod:`.jobs`); requests are read by :mod:`.requests`, and the
analyzer's dataclasses become JSON through :mod:`emotion_service.views`. The production checks
that need the request live here: API keys (:mod:`.auth` decides which), rate limits
(flask-limiter), request metrics (:mod:`.metrics`) and access logs (:mod:`.logs`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid

from flask import Flask, current_app, g, request
from flask_limiter import Limiter
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge, TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from ..analysis.analyzer import SpeechEmotionAnalyzer
from ..config import Settings
from ..errors import Overloaded, ServiceError, Unauthorized
from . import analysis, candidates, console, docs, logs, metrics, service, stream
from .auth import HEADER as API_KEY_HEADER
from .auth import ApiKeys, load_api_keys
from .jobs import init_app as init_jobs
from .requests import InMemoryRequest, envelope

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("emotion_service.access")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# -- error handling and request bookkeeping ----------------------------------------------------


def _service_error(exc: ServiceError):
    logger.info("request %s rejected: %s %s", g.get("request_id"), exc.error_code, exc.message)
    response = envelope(False, exc.message, None, exc.error_code, exc.status)
    if isinstance(exc, Overloaded):
        g.retry_after = exc.retry_after  # set last in _after: the rate limiter rewrites Retry-After
    return response


def _http_error(exc: HTTPException):
    status = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        settings: Settings = current_app.config["SETTINGS"]
        message = (
            f"The request is larger than the limit of {settings.max_request_mb:g} MB (MAX_REQUEST_MB); "
            "send a shorter or compressed recording, or fewer segments."
        )
    elif isinstance(exc, TooManyRequests):
        key = "API key" if g.get("api_key_id") else "client address"
        message = (
            f"Too many requests: the limit is {exc.description} per {key} (RATE_LIMITS); "
            "wait the number of seconds in the Retry-After header, then retry."
        )
    else:
        message = exc.description or exc.name
    return envelope(False, message, None, _HTTP_CODES.get(status, "HTTP_ERROR"), status)


def _internal_error(exc: Exception):
    logger.exception("request %s failed", g.get("request_id"))
    return envelope(
        False, "Internal error; the request id in X-Request-ID helps find it in the logs.", None, "INTERNAL_ERROR", 500
    )


def _before() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()
    logs.request_id.set(g.request_id)
    # Who is asking: the id of a valid key (never the key), used by auth and the rate limits.
    api_keys: ApiKeys = current_app.config["API_KEYS"]
    g.api_key_id = api_keys.identify(request.headers.get(API_KEY_HEADER))


def _authenticate() -> None:
    api_keys: ApiKeys = current_app.config["API_KEYS"]
    if not api_keys.enabled or g.api_key_id is not None:
        return
    endpoint = (request.endpoint or "").rpartition(".")[2]
    if "console" in api_keys.exempt and (
        endpoint in console.PUBLIC_ENDPOINTS or (endpoint == "index" and console.wants_html())
    ):
        return  # the console's page and files hold no data; the page sends the key with each call
    if endpoint == "stream" and not request.headers.get(API_KEY_HEADER):
        return  # browsers cannot set headers on a WebSocket: the key comes in its start message (stream.py)
    if request.endpoint and (
        endpoint in api_keys.exempt or (endpoint in docs.DOCS_ENDPOINTS and "docs" in api_keys.exempt)
    ):
        return
    problem = "is not an accepted key" if request.headers.get(API_KEY_HEADER) else "is missing"
    raise Unauthorized(
        f"The {API_KEY_HEADER} header {problem}: send one of the service's API keys in it, "
        f"e.g. curl -H '{API_KEY_HEADER}: <key>' (keys are set with API_KEYS or API_KEYS_FILE)."
    )


def _rate_limit_key() -> str:
    """Count requests per API key; per client address (after ProxyFix) when there is none."""
    key_id = g.get("api_key_id")
    return f"key:{key_id}" if key_id else f"ip:{request.remote_addr or 'unknown'}"


def _route() -> str:
    """The route that served the request: a bounded label (never the raw path)."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def _discard_unread_body() -> None:
    """Read what is left of a body the request was answered without (401, 429, 415...).

    gunicorn drains at most 64 KB of an unread body before it reuses a keep-alive connection, and
    closes the connection otherwise: a client that sent a larger body then gets a reset instead of
    an answer to its next request on that connection. Bodies over MAX_CONTENT_LENGTH are left to
    the server, which closes the connection after the 413.
    """
    length = request.content_length
    if not length or length > current_app.config["MAX_CONTENT_LENGTH"]:
        return
    with contextlib.suppress(ClientDisconnected, OSError):
        while request.stream.read(1 << 16):
            pass


def _after(response):
    _discard_unread_body()
    if g.get("retry_after") is not None:
        response.headers["Retry-After"] = str(g.retry_after)
    response.headers["X-Request-ID"] = g.get("request_id", "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    route = _route()
    metrics.record_request(route, request.method, response.status_code, elapsed)
    access_logger.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "request_id": g.get("request_id"),
            "method": request.method,
            "path": request.path,
            "endpoint": route,
            "status": response.status_code,
            "bytes_in": request.content_length or 0,
            "bytes_out": response.calculate_content_length(),
            "duration": round(elapsed, 6),
            "client": request.remote_addr,
        },
    )
    return response


def _teardown(exc: BaseException | None) -> None:
    logs.request_id.set(None)


def _init_rate_limits(app: Flask, settings: Settings) -> Limiter | None:
    """Apply RATE_LIMITS to every endpoint but /health and /metrics (probes and scrapers).

    Counts live in Redis when REDIS_URL is set, so they hold across workers and instances. If
    Redis cannot be reached, each process falls back to counting in its own memory (same limits)
    and tries Redis again with growing intervals; requests are never refused because of Redis.
    """
    if settings.rate_limits == "off":
        return None
    limiter = Limiter(
        _rate_limit_key,
        application_limits=[settings.rate_limits],
        storage_uri=settings.redis_url or "memory://",
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1} if settings.redis_url else {},
        strategy="fixed-window",
        key_prefix="emotion-api",
        headers_enabled=True,
        in_memory_fallback=[settings.rate_limits],
        swallow_errors=True,
    )
    limiter.request_filter(lambda: (request.endpoint or "").rpartition(".")[2] in ("health", "metrics"))
    limiter.init_app(app)
    return limiter


def _record_models(analyzer: SpeechEmotionAnalyzer) -> None:
    metrics.record_models(analyzer.models, (failure.name for failure in analyzer.failures))


def _record_when_loaded(loader: threading.Thread, analyzer: SpeechEmotionAnalyzer) -> None:
    loader.join()
    _record_models(analyzer)


def create_app(
    settings: Settings | None = None,
    analyzer: SpeechEmotionAnalyzer | None = None,
    *,
    load_models: str = "background",
) -> Flask:
    """Build the Flask app.

    Args:
        settings: Service settings; read from the environment when None.
        analyzer: A ready analyzer (tests); built from ``settings`` when None.
        load_models: ``background`` (serve /health at once, /analyze answers 503 until loaded),
            ``now`` (load before returning) or ``lazy`` (never here; the caller loads).
    """
    settings = settings or Settings.from_env()
    if analyzer is None:
        analyzer = SpeechEmotionAnalyzer.from_settings(settings, load=False, on_cache_error=metrics.record_cache_error)
        if load_models == "now":
            analyzer.load()
        elif load_models == "background":
            loader = analyzer.load_in_background()
            threading.Thread(target=_record_when_loaded, args=(loader, analyzer), daemon=True).start()
    if not analyzer.loading:
        _record_models(analyzer)

    app = Flask(__name__, static_folder=None)  # no static files: /docs serves its own assets
    app.request_class = InMemoryRequest
    if settings.trusted_proxies:
        # Only the last TRUSTED_PROXIES hops of X-Forwarded-For were added by our own proxies.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    app.config.update(
        SETTINGS=settings,
        ANALYZER=analyzer,
        API_KEYS=load_api_keys(settings),
        MAX_CONTENT_LENGTH=int(settings.max_request_mb * 1_000_000),
        MAX_FORM_MEMORY_SIZE=int(settings.max_request_mb * 1_000_000),
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    for blueprint in (service.bp, analysis.bp, candidates.bp, docs.bp):
        app.register_blueprint(blueprint)
    init_jobs(app, settings, analyzer)
    stream.init_app(app, settings, analyzer)
    console.init_app(app)
    # Order matters: request id and key id first, then the rate limits (which also slow down
    # clients guessing keys), then authentication.
    app.before_request(_before)
    # after_request functions run in reverse order: _after runs after the limiter's header
    # injection, so its Retry-After (503 OVERLOADED) is not overwritten by the limiter's.
    app.after_request(_after)
    app.extensions["emotion_limiter"] = _init_rate_limits(app, settings)
    app.before_request(_authenticate)
    app.teardown_request(_teardown)
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    return app
