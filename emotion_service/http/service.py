"""The service's own resources: the index, ``/health`` and ``/metrics``."""

from __future__ import annotations

from flask import Blueprint, Response

from .. import __version__
from . import metrics
from .console import page as console_page
from .console import wants_html
from .requests import current_analyzer, envelope, request_lang

MESSAGES = {
    "healthy": {"zh": "服务运行正常", "en": "Service is healthy"},
    "degraded": {"zh": "服务降级运行：部分模型未能加载", "en": "Service degraded: some models failed to load"},
    "loading": {"zh": "模型加载中", "en": "Models are loading"},
    "unhealthy": {"zh": "没有可用的情感模型", "en": "No emotion model is available"},
}

bp = Blueprint("service", __name__)


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
    analyzer = current_analyzer()
    lang = request_lang()
    models = [
        {
            "name": m.info.name,
            "display_name": m.info.display_name,
            "source": m.info.source,
            "version": m.info.version,
            "licence": m.info.licence,
            "commercial_use": m.info.commercial_use,
            "device": m.info.device,
            "dtype": m.info.dtype,
            "labels": list(m.info.labels),
            "attribution": m.info.extra.get("attribution") or None,
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


@bp.get("/metrics", endpoint="metrics")
def metrics_endpoint():
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
