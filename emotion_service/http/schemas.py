"""Request and response models of the HTTP API (pydantic), the single source of the OpenAPI document.

The HTTP layer validates JSON request bodies with the request models below, and the tests
validate every response of every endpoint against the response models (which forbid unknown
fields), so the OpenAPI description built from them (:func:`openapi_document`) cannot drift
from what the code accepts and returns.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from .. import __version__

Lang = Literal["zh", "en"]
CandidateId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ---------------------------------------------------------------------------------


class AnalyzeRequest(_Request):
    """JSON body of ``POST /analyze`` (the other ways in: multipart field ``audio``, or a raw ``audio/*`` body)."""

    audio_data: str = Field(
        description="The recording, base64-encoded, with or without a data:audio/...;base64, prefix."
    )
    lang: Lang | None = Field(None, description="Language of names and advice (default: DEFAULT_LANG, zh).")
    candidate_id: CandidateId | None = Field(
        None,
        description="The platform's opaque id of the candidate (1-256 characters): the clip is judged against the candidate's baseline, which it then joins. Only running feature statistics are kept, under a keyed hash of the id, for BASELINE_TTL_HOURS; DELETE /candidates/{candidate_id} erases them.",
    )


class SegmentItem(_Request):
    audio_data: str = Field(description="One segment, base64-encoded.")


SegmentInput = str | SegmentItem
SEGMENT_ADAPTER: TypeAdapter[SegmentInput] = TypeAdapter(SegmentInput)


class BatchRequest(_Request):
    """JSON body of ``POST /batch_analyze`` (or several multipart files in field ``audio``)."""

    audio_segments: list[SegmentInput] = Field(
        min_length=1,
        description="One candidate's answers in order, at most MAX_BATCH_SEGMENTS; longer sessions: /jobs.",
    )
    lang: Lang | None = None
    candidate_id: CandidateId | None = Field(
        None, description="The candidate's id: the segments are judged against the candidate's baseline (see /analyze)."
    )


# -- responses --------------------------------------------------------------------------------

Probabilities = dict[str, float]


class BasicInfo(_Response):
    duration: float
    sample_rate: int
    models_count: int
    original_sample_rate: int
    channels: int
    format: str


class ModelResultOut(_Response):
    model: str
    model_name: str
    emotion: str
    emotion_label: str
    confidence: float
    probabilities: Probabilities
    arousal: float | None
    valence: float | None
    inference_time: float


class FinalResult(_Response):
    recommended_emotion: str
    recommended_emotion_label: str
    confidence: float
    best_model: str
    average_confidence: float
    models_consensus: bool
    agreement: float
    probabilities: Probabilities
    arousal: float | None
    valence: float | None


class InterviewAssessmentOut(_Response):
    emotion_type: Literal["positive", "neutral", "negative"]
    score: float = Field(ge=0, le=100)
    confidence_level: str = Field(description="高/中/低 (high/medium/low with lang=en)")
    recommendations: list[str]


class Delivery(_Response):
    duration: float
    speaking_time: float
    speaking_ratio: float
    pause_count: int
    mean_pause: float
    longest_pause: float
    pauses: list[tuple[float, float]] = Field(description="[start, end] of each pause, seconds")
    syllables: int
    speech_rate: float = Field(description="syllable nuclei per second, pauses included")
    articulation_rate: float = Field(description="syllable nuclei per second of speaking time")
    pitch_median_hz: float | None
    pitch_sd_semitones: float | None
    pitch_range_semitones: float | None
    loudness_db: float | None
    loudness_sd_db: float
    voiced_ratio: float
    voice_breaks: int


class BaselineOut(_Response):
    mode: Literal["clip", "baseline"] = Field(
        description="baseline: judged against the speaker's usual voice; clip: alone (no baseline, or too few clips)"
    )
    clips: int = Field(description="clips in the baseline, this request's included; 0 for a clip alone")
    source: Literal["candidate", "session"] | None = Field(
        description="candidate: the candidate_id's running statistics; session: this request's clips"
    )


class AnalysisData(_Response):
    basic_info: BasicInfo
    models_results: list[ModelResultOut]
    final_result: FinalResult | None = Field(description="null when EMOTION_INFERENCE=off")
    interview_assessment: InterviewAssessmentOut | None
    processing_time: float
    cached: bool
    delivery: Delivery | None = None
    baseline: BaselineOut | None = Field(
        None, description="how the models that know speakers' baselines judged the clip; absent without such a model"
    )


class SegmentOk(AnalysisData):
    index: int
    success: Literal[True]


class SegmentError(_Response):
    index: int
    success: Literal[False]
    error_code: str
    message: str


class Stability(_Response):
    score: float
    dominant_share: float
    emotion_changes: int


class SessionSummaryOut(_Response):
    segments_analyzed: int
    total_duration: float
    dominant_emotion: str
    dominant_emotion_label: str
    emotion_distribution: Probabilities
    stability: Stability
    average_score: float
    emotion_type: Literal["positive", "neutral", "negative"]
    recommendations: list[str]


class BatchData(_Response):
    results: list[SegmentOk | SegmentError]
    session_summary: SessionSummaryOut | None
    segments_failed: int


class ModelOut(_Response):
    name: str
    display_name: str
    source: str
    version: str
    licence: str
    commercial_use: bool
    device: str
    dtype: str = Field(
        description="the arithmetic its weights run in: fp32, bf16 (CPUs with native bf16), int8 (QUANTIZE=int8) or fp16 (CUDA)"
    )
    labels: list[str]
    attribution: str | None = Field(None, description="what the licence of the model's training data asks to credit")


class FailedModel(_Response):
    name: str
    display_name: str
    source: str
    reason: str


class HealthData(_Response):
    status: Literal["healthy", "degraded", "loading", "unhealthy"]
    models_loaded: int
    available_models: list[str]
    preset: str
    models: list[ModelOut]
    failed_models: list[FailedModel]
    emotion_inference: bool
    version: str


class Envelope(_Response):
    success: bool
    message: str
    data: Any = None
    error_code: str | None = Field(None, description="present when success is false")


# -- OpenAPI ----------------------------------------------------------------------------------

ERROR_STATUSES = {
    "400": "Bad input: the message says how to fix it (error_code: EMPTY_AUDIO, UNSUPPORTED_FORMAT, ...)",
    "401": "Missing or wrong X-API-Key (UNAUTHORIZED)",
    "413": "Over MAX_UPLOAD_MB / MAX_REQUEST_MB (PAYLOAD_TOO_LARGE)",
    "415": "Unsupported Content-Type (UNSUPPORTED_MEDIA_TYPE)",
    "429": "Rate limit reached (RATE_LIMITED); see Retry-After",
    "503": "No model loaded, models loading, or overloaded (see Retry-After)",
}

CANDIDATE_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 256}

# Endpoint -> (method, summary, request model, data model, extra request bodies).
ENDPOINTS: dict[str, dict[str, Any]] = {
    "/health": {"method": "get", "summary": "Service and model status", "data": HealthData, "auth": False},
    "/analyze": {"method": "post", "summary": "Analyse one clip", "request": AnalyzeRequest, "data": AnalysisData, "upload": "single"},
    "/batch_analyze": {"method": "post", "summary": "Analyse the answers of one session", "request": BatchRequest, "data": BatchData, "upload": "multiple"},
}  # fmt: skip


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    components: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


def openapi_document(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API, built from the models above."""
    models: list[type[BaseModel]] = [Envelope]
    paths: dict[str, Any] = {}
    for path, spec in ENDPOINTS.items():
        data_model: type[BaseModel] = spec["data"]
        models.append(data_model)
        ok_schema = {
            "allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {"type": "object", "properties": {"data": {"$ref": f"#/components/schemas/{data_model.__name__}"}}},
            ]
        }
        request_model = spec.get("request")
        operation: dict[str, Any] = {
            "summary": spec["summary"],
            "parameters": [
                {"name": "lang", "in": "query", "required": False, "schema": {"enum": ["zh", "en"]}},
                *(
                    [{"name": "candidate_id", "in": "query", "required": False, "schema": CANDIDATE_SCHEMA}]
                    if request_model is not None
                    else []
                ),
            ],
            "responses": {
                "200": {"description": "Success", "content": {"application/json": {"schema": ok_schema}}},
                **{
                    status: {
                        "description": text,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                    }
                    for status, text in ERROR_STATUSES.items()
                },
            },
        }
        if spec.get("auth", True):
            operation["security"] = [{"ApiKey": []}]
        if request_model is not None:
            models.append(request_model)
            upload = {
                "type": "string",
                "format": "binary",
                "description": "The recording (WAV, FLAC, OGG, MP3, M4A, WebM...)",
            }
            multipart = (
                {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": upload,
                        "lang": {"enum": ["zh", "en"]},
                        "candidate_id": CANDIDATE_SCHEMA,
                    },
                }
                if spec.get("upload") == "single"
                else {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {"type": "array", "items": upload},
                        "candidate_id": CANDIDATE_SCHEMA,
                    },
                }
            )
            content = {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{request_model.__name__}"}},
                "multipart/form-data": {"schema": multipart},
            }
            if spec.get("upload") == "single":
                content["audio/*"] = {"schema": upload}
            operation["requestBody"] = {"required": True, "content": content}
        paths[path] = {spec["method"]: operation}
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    paths.update(extra_paths or {})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Speech emotion analysis API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": _schemas(models),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
