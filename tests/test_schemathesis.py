"""Fuzz the HTTP API from its own OpenAPI description (schemathesis), in process over WSGI.

schemathesis reads the OpenAPI document the app serves and generates requests for every
operation: bodies, query strings and path ids that fit it (positive) and that do not (negative:
wrong types, missing fields, bad enums). Every response must be no 5xx, carry a status the
document lists for the operation, and match the document's schema for that status, error
envelopes included. Bounded: ``MAX_EXAMPLES`` examples per operation and mode, each with a
deadline, derandomized so that a failure reproduces.

schemathesis' own pytest integration (``from_fixture``) does not run on pytest 9, so the cases
are drawn from each operation's strategy in a plain hypothesis test.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.audio.decode import AudioLimits
from emotion_service.config import Settings
from emotion_service.http.app import create_app
from emotion_service.http.docs import extra_paths
from emotion_service.http.schemas import openapi_document

from .conftest import StandInModel

MAX_EXAMPLES = 25
KEY = "schemathesis-key-5a1f0c"
# The document the app serves at /openapi.json (checked equal below), built without an app.
SCHEMA = schemathesis.openapi.from_dict(openapi_document(extra_paths()))
# GET /stream is a WebSocket upgrade: its protocol is tested in test_stream.py, not fuzzed over HTTP.
OPERATIONS = {
    op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations()) if op.label != "GET /stream"
}
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app with keys on (every case carries a valid key) and a private job store."""
    settings = Settings(
        max_upload_mb=1, max_request_mb=2, max_audio_seconds=30, api_keys=(KEY,), rate_limits="off",
        job_dir=str(tmp_path_factory.mktemp("jobs")),
    )  # fmt: skip
    analyzer = SpeechEmotionAnalyzer.from_models(
        {"standin": StandInModel()}, {"standin": 1.0}, limits=AudioLimits(max_bytes=1_000_000, max_seconds=30)
    )
    app = create_app(settings, analyzer)
    yield app
    app.extensions["emotion_jobs"].close()


def test_the_fuzzed_document_is_the_served_one(app):
    served = app.test_client().get("/openapi.json").get_json()
    assert served == SCHEMA.raw_schema
    assert set(OPERATIONS) == {
        "GET /health", "GET /metrics", "POST /analyze", "POST /batch_analyze",
        "POST /jobs", "GET /jobs/{job_id}", "DELETE /jobs/{job_id}", "DELETE /candidates/{candidate_id}",
    }  # fmt: skip


# GET /metrics takes no input at all: there is nothing to make invalid.
CASES = [
    (label, mode)
    for label in sorted(OPERATIONS)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if (label, mode) != ("GET /metrics", GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize("label,mode", CASES, ids=[f"{label}-{mode}" for label, mode in CASES])
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_api_conforms_to_its_openapi_description(app, label, mode, data):
    case = data.draw(OPERATIONS[label].as_strategy(generation_mode=mode))
    response = case.call(app=app, headers={"X-API-Key": KEY})
    assert response.status_code < 500, (response.status_code, response.text[:300])
    case.validate_response(response, checks=CHECKS, headers={"X-API-Key": KEY})
