"""The API's description: ``/openapi.json`` and the offline Swagger UI at ``/docs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, send_from_directory

from .schemas import openapi_document

bp = Blueprint("docs", __name__)


def extra_paths() -> dict[str, Any]:
    """The OpenAPI paths the blueprints describe themselves (jobs, candidates, the WebSocket stream)."""
    from . import candidates, jobs, stream

    return {**jobs.OPENAPI_PATHS, **candidates.OPENAPI_PATHS, **stream.OPENAPI_PATHS}


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
    return jsonify(openapi_document(extra_paths()))


@bp.get("/docs", endpoint="docs")
def docs():
    """Interactive docs (Swagger UI, served from the flask-swagger-ui wheel: no CDN, works offline)."""
    return Response(_DOCS_PAGE, content_type="text/html; charset=utf-8")


@bp.get("/docs/<path:name>", endpoint="docs_asset")
def docs_asset(name: str):
    import flask_swagger_ui

    return send_from_directory(Path(flask_swagger_ui.__file__).parent / "dist", name, max_age=86_400)
