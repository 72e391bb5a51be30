"""The web console: one page (``emotion_service/resources/console/``) served at ``/`` to browsers.

API clients keep the JSON index at ``/``; a request whose ``Accept`` prefers ``text/html`` gets
the page instead. The page and its assets hold no data and need no key: the page asks for the key
and sends it with each API call. All URLs in it are relative, so it also works under a proxy's
prefix (``/api/emotion/``). Nothing is loaded from elsewhere: it works offline.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, request, send_from_directory

bp = Blueprint("console", __name__)
FOLDER = Path(__file__).resolve().parent.parent / "resources" / "console"
# The console's endpoints, served without a key (see app._authenticate).
PUBLIC_ENDPOINTS = ("console_asset",)
CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def wants_html() -> bool:
    """Whether the client (a browser) prefers the page to the JSON index."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def page() -> Response:
    response = send_from_directory(FOLDER, "index.html", max_age=0)
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.get("/console/<path:name>", endpoint="console_asset")
def asset(name: str) -> Response:
    response = send_from_directory(FOLDER, name, max_age=300)
    response.headers["Content-Security-Policy"] = CSP
    return response


def init_app(app: Flask) -> None:
    """Serve the console's files under ``/console/``."""
    app.register_blueprint(bp)
