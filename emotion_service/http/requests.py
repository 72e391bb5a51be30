"""Reading requests and writing the envelope: what every blueprint shares.

Uploads stay in memory (:class:`InMemoryRequest`); the audio of a request is found in a multipart
field, a JSON base64 field or a raw body, bounded by ``MAX_UPLOAD_MB``, and every answer is the
spec's ``{success, message, data}`` envelope.
"""

from __future__ import annotations

import io
from typing import Any, TypeVar

from flask import Request, current_app, jsonify, request
from pydantic import BaseModel, ValidationError

from ..analysis.analyzer import SpeechEmotionAnalyzer
from ..analysis.baselines import MAX_CANDIDATE_ID
from ..audio.decode import AudioLimits, decode_base64
from ..config import LANGS
from ..errors import InvalidRequest, PayloadTooLarge, ServiceError
from .schemas import SEGMENT_ADAPTER, AnalyzeRequest

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


def envelope(success: bool, message: str, data: Any = None, error_code: str | None = None, status: int = 200):
    body: dict[str, Any] = {"success": success, "message": message, "data": data}
    if error_code is not None:
        body["error_code"] = error_code
    response = jsonify(body)
    response.status_code = status
    return response


def request_lang() -> str:
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


ModelT = TypeVar("ModelT", bound=BaseModel)


def current_analyzer() -> SpeechEmotionAnalyzer:
    """The app's analyzer."""
    return current_app.config["ANALYZER"]


def _limits() -> AudioLimits:
    return current_analyzer().limits


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


def json_body() -> dict[str, Any]:
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
        body = json_body()
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
        body = json_body()
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


def request_candidate_id() -> str | None:
    """``candidate_id`` of the request (query, form or JSON body), checked; None when absent."""
    value: Any = request.args.get("candidate_id")
    if value is None and request.method == "POST":
        if request.mimetype == "multipart/form-data":
            value = request.form.get("candidate_id")
        elif request.is_json:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                value = body.get("candidate_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_CANDIDATE_ID or not value.isprintable():
        raise InvalidRequest(
            f"'candidate_id' must be a string of 1 to {MAX_CANDIDATE_ID} printable characters: your platform's "
            "opaque id of the candidate (never a name or an e-mail address).",
            error_code="INVALID_CANDIDATE_ID",
        )
    return value
