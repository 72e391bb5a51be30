"""The spec's analysis endpoints: ``POST /analyze`` and ``POST /batch_analyze``."""

from __future__ import annotations

from flask import Blueprint, current_app

from ..analysis.analyzer import SegmentOutcome, SessionResult
from ..config import Settings
from ..errors import ServiceError
from ..views import analysis_json, session_json
from . import metrics
from .requests import (
    batch_segments_from_request,
    current_analyzer,
    envelope,
    request_candidate_id,
    request_lang,
    single_audio_from_request,
)

MESSAGES = {
    "ok": {"zh": "分析完成", "en": "Analysis complete"},
    "batch_ok": {"zh": "批量分析完成", "en": "Batch analysis complete"},
}

bp = Blueprint("analysis", __name__)


@bp.post("/analyze")
def analyze():
    lang = request_lang()
    candidate_id = request_candidate_id()
    audio = single_audio_from_request()
    result = current_analyzer().analyze(audio, lang=lang, candidate_id=candidate_id)
    metrics.record_analysis(result)
    return envelope(True, MESSAGES["ok"][lang], analysis_json(result, lang))


@bp.post("/batch_analyze")
def batch_analyze():
    lang = request_lang()
    settings: Settings = current_app.config["SETTINGS"]
    candidate_id = request_candidate_id()
    items = batch_segments_from_request(settings.max_batch_segments)
    metrics.record_batch(len(items))
    # Segments that failed to arrive (bad base64, too large) keep their place in the response.
    arrived = [index for index, item in enumerate(items) if isinstance(item, bytes)]
    session = current_analyzer().analyze_session([items[i] for i in arrived], lang=lang, candidate_id=candidate_id)
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
