"""HTTP endpoints of asynchronous jobs: ``POST /jobs``, ``GET /jobs/<id>``, ``DELETE /jobs/<id>``.

A job analyses a whole recording in the background (:func:`emotion_service.jobs.task.run_job`); the client polls
its status or gets a signed webhook when it ends. The backend (local threads + SQLite, or Celery
+ Redis) comes from ``JOB_BACKEND``; see :mod:`emotion_service.jobs`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from flask import Blueprint, Flask, current_app, request, url_for
from pydantic import BaseModel, ConfigDict, Field

from ..analysis.analyzer import SpeechEmotionAnalyzer
from ..analysis.interview import parse_ranges
from ..audio.decode import check_container
from ..audio.segmentation import SegmentOptions
from ..config import LANGS, Settings
from ..errors import InvalidRequest
from ..jobs.factory import open_backend
from ..jobs.store import STORE_FILE, JobBackend, JobNotFound, JobStatus, JobTask, job_directory, job_json, valid_job_id
from ..jobs.task import run_job
from ..jobs.webhooks import WebhookPolicy, notifier
from .requests import (
    current_analyzer,
    envelope,
    json_body,
    request_candidate_id,
    request_lang,
    single_audio_from_request,
)
from .schemas import ERROR_STATUSES

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__)
EXTENSION = "emotion_jobs"
# Options a client may set; the server adds max_seconds (JOB_MAX_SECONDS) itself.
CLIENT_OPTIONS = ("speech_lang", "ranges")

MESSAGES = {
    "accepted": {"zh": "任务已提交", "en": "Job accepted"},
    "queued": {"zh": "任务排队中", "en": "Job is queued"},
    "running": {"zh": "任务进行中", "en": "Job is running"},
    "done": {"zh": "任务完成", "en": "Job is done"},
    "failed": {"zh": "任务失败", "en": "Job failed"},
    "deleted": {"zh": "任务已删除", "en": "Job deleted"},
}


def default_task(analyzer: SpeechEmotionAnalyzer, segments: SegmentOptions | None = None) -> JobTask:
    """The work of a job: the whole-interview analysis of :mod:`emotion_service.analysis.interview`."""
    run = functools.partial(run_job, analyzer, segments=segments)

    def task(audio: bytes, options: dict[str, Any], progress: Callable[[float], None]) -> dict[str, Any]:
        analyzer.load()  # a job re-queued at start may come before the models finished loading: wait for them
        return run(audio, options, progress)

    return task


class Jobs:
    """The app's job backend, opened on first use (or at once with ``start``)."""

    def __init__(self, settings: Settings, task: JobTask) -> None:
        self.settings = settings
        self.task = task
        self.policy = WebhookPolicy(settings.webhook_allowed_hosts, settings.webhook_allow_private)
        self._backend: JobBackend | None = None
        self._lock = threading.Lock()

    @property
    def backend(self) -> JobBackend:
        with self._lock:
            if self._backend is None:
                self._backend = open_backend(self.settings, self.task, notifier(self.settings))
            return self._backend

    def close(self) -> None:
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None


def init_app(app: Flask, settings: Settings, analyzer: SpeechEmotionAnalyzer, *, start: bool | None = None) -> Jobs:
    """Add the /jobs endpoints.

    Args:
        start: Open the backend now. Default: when a local job store already exists, so jobs
            interrupted by a restart run again at once; otherwise on the first /jobs request
            (an app that never gets one creates no job directory).
    """
    jobs = Jobs(settings, default_task(analyzer, SegmentOptions(vad=settings.vad)))
    app.extensions[EXTENSION] = jobs
    app.register_blueprint(bp)
    if start is None:
        start = settings.job_backend == "local" and (job_directory(settings) / STORE_FILE).exists()
    if start:
        jobs.backend  # noqa: B018 - opening it is the point
    return jobs


def _jobs() -> Jobs:
    return current_app.extensions[EXTENSION]


# -- request parsing --------------------------------------------------------------------------------


def _field(name: str) -> Any:
    """A non-audio field of a /jobs request: from the JSON body, the form, or the query."""
    if request.is_json:
        body = json_body()
        if name in body:
            return body[name]
    elif request.mimetype == "multipart/form-data" and name in request.form:
        return request.form[name]
    return request.args.get(name)


def _options(lang: str) -> dict[str, Any]:
    raw = _field("options")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser allows
            raise InvalidRequest("'options' is not valid JSON; send an object such as {\"speech_lang\": \"en\"}.",
                                 error_code="INVALID_OPTIONS") from None  # fmt: skip
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InvalidRequest(
            '\'options\' must be a JSON object such as {"speech_lang": "en"}.', error_code="INVALID_OPTIONS"
        )
    unknown = sorted(set(raw) - set(CLIENT_OPTIONS))
    if unknown:
        raise InvalidRequest(f"'options' has unknown keys {unknown}; allowed: {', '.join(CLIENT_OPTIONS)}.",
                             error_code="INVALID_OPTIONS")  # fmt: skip
    if "speech_lang" in raw and raw["speech_lang"] not in LANGS:
        raise InvalidRequest(f"options.speech_lang must be one of {', '.join(LANGS)}.", error_code="INVALID_OPTIONS")
    parse_ranges(raw.get("ranges"))  # raises INVALID_RANGES with what is wrong
    settings: Settings = current_app.config["SETTINGS"]
    options = {**raw, "lang": lang, "max_seconds": settings.job_max_seconds}
    candidate_id = request_candidate_id()
    if candidate_id is not None:
        # The job record keeps the keyed hash the baseline store uses, never the platform's id.
        key = current_analyzer().candidate_key(candidate_id)
        if key is not None:
            options["candidate_key"] = key
    return options


def _webhook_url() -> str | None:
    url = _field("webhook_url")
    if url in (None, ""):
        return None
    if not isinstance(url, str):
        raise InvalidRequest("'webhook_url' must be a string (an https URL).", error_code="INVALID_WEBHOOK_URL")
    return _jobs().policy.check(url)


def _job_id(job_id: str) -> str:
    if not valid_job_id(job_id):
        raise JobNotFound(f"No job {job_id[:64]!r}: job ids are the 32 hex characters POST /jobs returned.")
    return job_id


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(
        f"No job {job_id}: it never existed, was deleted, or its result passed the retention time "
        "(JOB_RETENTION_HOURS); submit the recording again."
    )


# -- routes ---------------------------------------------------------------------------------------------


@bp.post("/jobs", endpoint="submit")
def submit():
    lang = request_lang()
    audio = single_audio_from_request()
    options = _options(lang)
    webhook_url = _webhook_url()
    check_container(audio, current_analyzer().limits)  # decoding is the job's
    job = _jobs().backend.submit(audio, options, webhook_url)
    del audio
    status_url = url_for("jobs.status", job_id=job.id)
    response = envelope(
        True,
        MESSAGES["accepted"][lang],
        {"job_id": job.id, "status": job.status.value, "status_url": status_url},
        status=202,
    )
    response.headers["Location"] = status_url
    return response


@bp.get("/jobs/<job_id>", endpoint="status")
def status(job_id: str):
    lang = request_lang()
    job = _jobs().backend.get(_job_id(job_id))
    if job is None:
        raise _not_found(job_id)
    return envelope(True, MESSAGES[job.status.value][lang], job_json(job))


@bp.delete("/jobs/<job_id>", endpoint="delete")
def delete(job_id: str):
    lang = request_lang()
    if not _jobs().backend.delete(_job_id(job_id)):
        raise _not_found(job_id)
    return envelope(True, MESSAGES["deleted"][lang], {"job_id": job_id, "deleted": True})


# -- OpenAPI -------------------------------------------------------------------------------------------


class JobRequest(BaseModel):
    """JSON body of ``POST /jobs`` (or multipart: file in ``audio``, the others as form fields)."""

    model_config = ConfigDict(extra="ignore")
    audio_data: str = Field(description="The whole recording, base64-encoded.")
    lang: Literal["zh", "en"] | None = Field(None, description="Language of names and advice.")
    webhook_url: str | None = Field(
        None, description="Called (signed POST) when the job ends; must be allowed by WEBHOOK_ALLOWED_HOSTS."
    )
    options: dict[str, Any] | None = Field(
        None, description="speech_lang (zh|en), ranges ([{start, end, label}] in seconds)."
    )
    candidate_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="The candidate's id: segments are judged against, and join, the candidate's baseline (see /analyze).",
    )


class JobAccepted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str
    status: JobStatus
    status_url: str


class JobError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error_code: str | None
    message: str


class JobData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str
    status: JobStatus
    progress: float = Field(ge=0, le=100, description="Percent done.")
    attempts: int
    created_at: str
    updated_at: str
    result: dict[str, Any] | None = Field(None, description="When done: the analysis of the whole recording.")
    error: JobError | None = Field(None, description="When failed (or retrying): why.")


class JobDeleted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str
    deleted: bool


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (these schemas sit inside paths, not components)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.rpartition("/")[2]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)  # type: ignore[no-any-return]


JOB_ERRORS = {
    "400": "Bad input or options (the message says how to fix it)",
    "404": "No such job (JOB_NOT_FOUND): never existed, deleted, or past its retention",
    "503": "The job queue cannot be reached (JOBS_UNAVAILABLE); retry later",
    "507": "The job store is out of disk space (JOB_STORE_FULL); nothing was kept, retry later",
}


def _operation(summary: str, status: int, model: type[BaseModel], body: bool = False) -> dict[str, Any]:
    envelope_schema = {
        "type": "object",
        "properties": {
            "success": {"type": "boolean"},
            "message": {"type": "string"},
            "data": _schema(model),
            "error_code": {"type": "string"},
        },  # fmt: skip
        "required": ["success", "message", "data"],
    }
    errors = ("400", "401", "413", "415", "429", "503", "507") if body else ("401", "404", "429", "503")
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{"ApiKey": []}],
        "responses": {
            str(status): {"description": "Success", "content": {"application/json": {"schema": envelope_schema}}},
            **{
                code: {
                    "description": JOB_ERRORS.get(code) or ERROR_STATUSES[code],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                }
                for code in errors
            },
        },
    }
    if body:
        upload = {"type": "string", "format": "binary"}
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": _schema(JobRequest)},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["audio"],
                        "properties": {
                            "audio": upload,
                            "lang": {"enum": ["zh", "en"]},
                            "webhook_url": {"type": "string"},
                            "options": {"type": "string", "description": "JSON object"},
                            "candidate_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        },
                    }
                },  # fmt: skip
                "audio/*": {"schema": upload},
            },
        }
    else:
        operation["parameters"] = [
            {
                "name": "job_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            }
        ]
    return operation


OPENAPI_PATHS = {
    "/jobs": {"post": _operation("Submit a whole recording for background analysis", 202, JobAccepted, body=True)},
    "/jobs/{job_id}": {
        "get": _operation("A job's status, progress and result", 200, JobData),
        "delete": _operation("Delete a job, its result and its recording", 200, JobDeleted),
    },
}
