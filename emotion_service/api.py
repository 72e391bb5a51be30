"""The HTTP layer: the spec's REST API over :class:`SpeechEmotionAnalyzer`.

This is the only module that knows about Flask. Requests are validated here; the analyzer gets
decoded inputs and returns dataclasses, which are turned into the spec's
``{success, message, data}`` envelope only here. The production checks that need the request
live here too: API keys (:mod:`.auth` decides which), rate limits (flask-limiter), request
metrics (:mod:`.metrics`) and access logs (:mod:`.logs`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

from flask import Blueprint, Flask, Request, Response, current_app, g, jsonify, request, send_from_directory
from flask_limiter import Limiter
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge, TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from . import __version__, logs, metrics
from .analyzer import SegmentOutcome, SessionResult, SpeechEmotionAnalyzer
from .api_console import PUBLIC_ENDPOINTS as CONSOLE_ENDPOINTS
from .api_console import page as console_page
from .api_console import wants_html
from .audio import AudioLimits, decode_base64
from .auth import HEADER as API_KEY_HEADER
from .auth import ApiKeys, load_api_keys
from .batching import Overloaded, ThreadPlan, configure_torch_threads
from .config import LANGS, Settings, load_models_config
from .errors import InvalidRequest, PayloadTooLarge, ServiceError, Unauthorized
from .schemas import SEGMENT_ADAPTER, AnalyzeRequest, openapi_document
from .serialize import analysis_json, session_json

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("emotion_service.access")

MESSAGES = {
    "ok": {"zh": "分析完成", "en": "Analysis complete"},
    "batch_ok": {"zh": "批量分析完成", "en": "Batch analysis complete"},
    "healthy": {"zh": "服务运行正常", "en": "Service is healthy"},
    "degraded": {"zh": "服务降级运行：部分模型未能加载", "en": "Service degraded: some models failed to load"},
    "loading": {"zh": "模型加载中", "en": "Models are loading"},
    "unhealthy": {"zh": "没有可用的情感模型", "en": "No emotion model is available"},
}

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
_TOO_DEEP = 'The JSON body is nested too deeply; send a flat object such as {"audio_data": "<base64>"}.'


class InMemoryRequest(Request):
    """Keeps uploaded files in memory: recordings are personal data and must not touch disk.

    The request body is already bounded by ``MAX_CONTENT_LENGTH``. JSON nested deeper than the
    parser's recursion limit is a 400, not a 500.
    """

    def _get_file_stream(  # type: ignore[override]
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> io.BytesIO:
        return io.BytesIO()

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any | None:
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            # The json module raises RecursionError, not ValueError, on input like [[[[...]]]].
            raise InvalidRequest(_TOO_DEEP, error_code="INVALID_JSON") from None


# -- envelope ---------------------------------------------------------------------------------


def envelope(success: bool, message: str, data: Any = None, error_code: str | None = None, status: int = 200):
    body: dict[str, Any] = {"success": success, "message": message, "data": data}
    if error_code is not None:
        body["error_code"] = error_code
    response = jsonify(body)
    response.status_code = status
    return response


def _lang() -> str:
    """The language of messages and advice: ``lang`` in the query, form or JSON body."""
    lang = request.args.get("lang")
    if not lang and request.method == "POST":
        if request.mimetype == "multipart/form-data":
            lang = request.form.get("lang")
        elif request.is_json:
            body = request.get_json(silent=True)
            if isinstance(body, dict) and isinstance(body.get("lang"), str):
                lang = body["lang"]
    lang = (lang or current_app.config["SETTINGS"].default_lang).lower()
    if lang not in LANGS:
        raise InvalidRequest(
            f"lang={lang!r} is not supported; use one of {', '.join(LANGS)}.", error_code="INVALID_LANG"
        )
    return lang


# -- request parsing --------------------------------------------------------------------------


ModelT = TypeVar("ModelT", bound=BaseModel)


def _limits() -> AudioLimits:
    return current_app.config["ANALYZER"].limits


def _read_upload(storage: Any, what: str) -> bytes:
    limit = _limits().max_bytes
    data = storage.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"{what} is larger than the limit of {limit / 1e6:.0f} MB (MAX_UPLOAD_MB); send a shorter or compressed recording."
        )
    return data


def _base64_audio(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(
            f"{what} must be a base64 string, not {type(value).__name__}.", error_code="INVALID_AUDIO_DATA"
        )
    limit = _limits().max_bytes
    if len(value) > limit * 4 // 3 + 1024:
        raise PayloadTooLarge(
            f"{what} decodes to more than the limit of {limit / 1e6:.0f} MB (MAX_UPLOAD_MB); send a shorter or compressed recording."
        )
    return decode_base64(value)


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        raise InvalidRequest(
            'The body is not valid JSON; send a JSON object such as {"audio_data": "<base64>"}.',
            error_code="INVALID_JSON",
        )
    if not isinstance(body, dict):
        raise InvalidRequest(
            'The JSON body must be an object such as {"audio_data": "<base64>"}.', error_code="INVALID_JSON"
        )
    return body


def _validated(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """Validate a JSON body with its request model (the one the OpenAPI document describes)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        code = {"lang": "INVALID_LANG", "audio_data": "INVALID_AUDIO_DATA"}.get(field, "INVALID_REQUEST")
        raise InvalidRequest(
            f"'{field}': {error['msg']}; see /openapi.json for the request format.", error_code=code
        ) from None


def _unsupported_media_type() -> ServiceError:
    error = InvalidRequest(
        f"Content-Type {request.mimetype or '(none)'!r} is not supported; send multipart/form-data with the file in "
        'field \'audio\', or application/json with {"audio_data": "<base64>"}.',
        error_code="UNSUPPORTED_MEDIA_TYPE",
    )
    error.status = 415
    return error


def single_audio_from_request() -> bytes:
    """The audio of an /analyze request: multipart field ``audio``, JSON ``audio_data`` or a raw body."""
    if request.mimetype == "multipart/form-data":
        if "audio" in request.files:
            return _read_upload(request.files["audio"], "The file in field 'audio'")
        if "audio_data" in request.form:
            return _base64_audio(request.form["audio_data"], "The form field 'audio_data'")
        got = sorted(str(name) for name in set(request.files) | set(request.form))  # a part may have no name
        raise InvalidRequest(
            f"No audio found: send the recording in the multipart field 'audio' (got fields {got or 'none'}).",
            error_code="MISSING_AUDIO",
        )
    if request.is_json:
        body = _json_body()
        if "audio_data" not in body:
            raise InvalidRequest(
                f"No audio found: the JSON object needs an 'audio_data' field with base64 audio (got keys {sorted(body)}).",
                error_code="MISSING_AUDIO",
            )
        parsed = _validated(AnalyzeRequest, body)
        return _base64_audio(parsed.audio_data, "'audio_data'")
    if request.mimetype.startswith("audio/") or request.mimetype in (
        "application/octet-stream",
        "video/webm",
        "video/mp4",
    ):
        return _read_upload(request.stream, "The request body")
    raise _unsupported_media_type()


def batch_segments_from_request(max_segments: int) -> list[bytes | ServiceError]:
    """The segments of a /batch_analyze request; a bad segment becomes its own error."""
    raw: list[Any]
    if request.mimetype == "multipart/form-data":
        files = request.files.getlist("audio") or request.files.getlist("audio_segments")
        if not files:
            raise InvalidRequest(
                'No segments found: send JSON {"audio_segments": ["<base64>", ...]} or several multipart files in field \'audio\'.',
                error_code="MISSING_AUDIO",
            )
        raw = files
    elif request.is_json:
        body = _json_body()
        if "audio_segments" not in body:
            raise InvalidRequest(
                f"No segments found: the JSON object needs 'audio_segments', a list of base64 strings (got keys {sorted(body)}).",
                error_code="MISSING_AUDIO",
            )
        raw = body["audio_segments"]
        if not isinstance(raw, list):
            raise InvalidRequest("'audio_segments' must be a list of base64 strings.", error_code="INVALID_AUDIO_DATA")
    else:
        raise _unsupported_media_type()
    if not raw:
        raise InvalidRequest("'audio_segments' is empty; send at least one segment.", error_code="EMPTY_BATCH")
    if len(raw) > max_segments:
        raise InvalidRequest(
            f"{len(raw)} segments is more than the limit of {max_segments} per request (MAX_BATCH_SEGMENTS); "
            "split the session into several requests, or send the whole recording to POST /jobs.",
            error_code="TOO_MANY_SEGMENTS",
        )
    segments: list[bytes | ServiceError] = []
    for index, item in enumerate(raw):
        what = f"audio_segments[{index}]"
        try:
            if hasattr(item, "read"):
                segments.append(_read_upload(item, what))
                continue
            try:
                parsed = SEGMENT_ADAPTER.validate_python(item)
            except ValidationError:
                raise InvalidRequest(
                    f'{what} must be a base64 string or {{"audio_data": "<base64>"}}.', error_code="INVALID_AUDIO_DATA"
                ) from None
            segments.append(_base64_audio(parsed if isinstance(parsed, str) else parsed.audio_data, what))
        except ServiceError as exc:
            segments.append(exc)
    return segments


# -- routes -----------------------------------------------------------------------------------

bp = Blueprint("emotion", __name__)


def _analyzer() -> SpeechEmotionAnalyzer:
    return current_app.config["ANALYZER"]


@bp.get("/")
def index():
    if wants_html():
        return console_page()  # browsers get the web console; API clients the JSON below
    return envelope(
        True,
        "Speech emotion analysis API",
        {
            "version": __version__,
            "endpoints": [
                "GET /health",
                "GET /metrics",
                "POST /analyze",
                "POST /batch_analyze",
                "POST /jobs",
                "GET /jobs/<job_id>",
                "DELETE /jobs/<job_id>",
                "GET /stream (WebSocket)",
            ],
            "docs": "See README.md: send multipart field 'audio' or JSON {'audio_data': base64}.",
        },
    )


@bp.get("/health")
def health():
    analyzer = _analyzer()
    lang = _lang()
    models = [
        {
            "name": m.info.name,
            "display_name": m.info.display_name,
            "source": m.info.source,
            "version": m.info.version,
            "licence": m.info.licence,
            "commercial_use": m.info.commercial_use,
            "device": m.info.device,
            "labels": list(m.info.labels),
        }
        for m in analyzer.models.values()
    ]
    failures = [
        {"name": f.name, "display_name": f.display_name, "source": f.source, "reason": f.reason}
        for f in analyzer.failures
    ]
    if analyzer.loading:
        status = "loading"
    elif not analyzer.emotion_inference:
        status = "healthy"  # delivery metrics need no model
    elif not models:
        status = "unhealthy"
    elif failures:
        status = "degraded"
    else:
        status = "healthy"
    data = {
        "status": status,
        "models_loaded": len(models),
        "available_models": [m["name"] for m in models],
        "preset": analyzer.preset,
        "models": models,
        "failed_models": failures,
        "emotion_inference": analyzer.emotion_inference,
        "version": __version__,
    }
    if status in ("healthy", "degraded"):
        return envelope(True, MESSAGES[status][lang], data)
    code = "MODELS_LOADING" if status == "loading" else "MODEL_UNAVAILABLE"
    response = envelope(False, MESSAGES[status][lang], data, code, 503)
    if status == "loading":
        response.headers["Retry-After"] = "5"
    return response


DOCS_ENDPOINTS = ("openapi", "docs", "docs_asset")
_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Speech emotion analysis API</title>
<link rel="stylesheet" href="docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div><script src="docs/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script></body></html>
"""


@bp.get("/openapi.json", endpoint="openapi")
def openapi():
    """The OpenAPI description, built from the same models that validate requests."""
    return jsonify(openapi_document(current_app.extensions.get("openapi_paths")))


@bp.get("/docs", endpoint="docs")
def docs():
    """Interactive docs (Swagger UI, served from the flask-swagger-ui wheel: no CDN, works offline)."""
    return Response(_DOCS_PAGE, content_type="text/html; charset=utf-8")


@bp.get("/docs/<path:name>", endpoint="docs_asset")
def docs_asset(name: str):
    import flask_swagger_ui

    return send_from_directory(Path(flask_swagger_ui.__file__).parent / "dist", name, max_age=86_400)


@bp.get("/metrics", endpoint="metrics")
def metrics_endpoint():
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


@bp.post("/analyze")
def analyze():
    lang = _lang()
    audio = single_audio_from_request()
    result = _analyzer().analyze(audio, lang=lang)
    metrics.record_analysis(result)
    return envelope(True, MESSAGES["ok"][lang], analysis_json(result, lang))


@bp.post("/batch_analyze")
def batch_analyze():
    lang = _lang()
    settings: Settings = current_app.config["SETTINGS"]
    items = batch_segments_from_request(settings.max_batch_segments)
    metrics.record_batch(len(items))
    # Segments that failed to arrive (bad base64, too large) keep their place in the response.
    arrived = [index for index, item in enumerate(items) if isinstance(item, bytes)]
    session = _analyzer().analyze_session([items[i] for i in arrived], lang=lang)
    outcomes: list[SegmentOutcome] = [
        SegmentOutcome(index=index, error=item) for index, item in enumerate(items) if isinstance(item, ServiceError)
    ]
    for index, outcome in zip(arrived, session.segments, strict=True):
        outcomes.append(SegmentOutcome(index=index, result=outcome.result, error=outcome.error))
        if outcome.result is not None:
            metrics.record_analysis(outcome.result)
    session = SessionResult(segments=sorted(outcomes, key=lambda o: o.index), summary=session.summary)
    data = session_json(session, lang)
    if not any(outcome.result is not None for outcome in session.segments):
        return envelope(
            False,
            "No segment could be analysed; see data.results for each segment's error.",
            data,
            "NO_VALID_SEGMENTS",
            400,
        )
    return envelope(True, MESSAGES["batch_ok"][lang], data)


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
    if "console" in api_keys.exempt and (endpoint in CONSOLE_ENDPOINTS or (endpoint == "index" and wants_html())):
        return  # the console's page and files hold no data; the page sends the key with each call
    if endpoint == "stream" and not request.headers.get(API_KEY_HEADER):
        return  # browsers cannot set headers on a WebSocket: the key comes in its start message (api_stream)
    if request.endpoint and (endpoint in api_keys.exempt or (endpoint in DOCS_ENDPOINTS and "docs" in api_keys.exempt)):
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


def configure_threads(settings: Settings) -> ThreadPlan:
    """Share this server process's cores between model calls (``TORCH_THREADS``; once per process).

    The server entry points call it in each worker process before :func:`create_app` loads models;
    apps built in tests leave the test process's threads alone. It never touches CUDA.
    """
    config = load_models_config(settings.models_config)
    # The bundled CNN is too small to split over cores: its calls run side by side instead.
    light = all(config.models[name].backend == "bundled" for name in config.preset(settings.model_preset))
    return configure_torch_threads(settings.torch_threads, workers=settings.workers, light_models=light)


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
        analyzer = SpeechEmotionAnalyzer.from_settings(settings, load=False)
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
    app.register_blueprint(bp)
    from .api_jobs import init_app as init_jobs  # imported here: api_jobs imports this module

    init_jobs(app, settings, analyzer)
    from .api_console import init_app as init_console
    from .api_stream import init_app as init_stream

    init_stream(app, settings, analyzer)
    init_console(app)
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
