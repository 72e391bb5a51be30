"""The OpenAPI document is valid, covers every route, and every real response fits its models."""

from __future__ import annotations

import base64
import io
import re

import pytest
from openapi_spec_validator import validate

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.config import Settings
from emotion_service.http.app import create_app
from emotion_service.http.schemas import AnalysisData, BatchData, Envelope, HealthData

from .conftest import StandInModel
from .signals import encode, voice_like

CLIP = encode(voice_like(1.5))
CLIP_B64 = base64.b64encode(CLIP).decode()


def test_document_is_valid_openapi_and_covers_every_route(app, client):
    document = client.get("/openapi.json").get_json()
    validate(document)
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method)  # Flask's <id> is OpenAPI's {id}
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if rule.endpoint.rpartition(".")[2] not in ("static", "index", "openapi", "docs", "docs_asset", "console_asset")
    }
    assert served <= documented, served - documented
    assert documented <= served, documented - served


def fits(response, status: int, data_model=None):
    assert response.status_code == status, response.get_data(as_text=True)
    body = Envelope.model_validate(response.get_json())
    if data_model is not None:
        data_model.model_validate(body.data)
    return body


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_responses_fit_their_models(client, lang):
    fits(client.get(f"/health?lang={lang}"), 200, HealthData)
    fits(client.post("/analyze", json={"audio_data": CLIP_B64, "lang": lang}), 200, AnalysisData)
    fits(client.post(f"/analyze?lang={lang}", data={"audio": (io.BytesIO(CLIP), "a.wav")}), 200, AnalysisData)
    batch = {"audio_segments": [CLIP_B64, {"audio_data": CLIP_B64}, "@@", 5], "lang": lang}
    fits(client.post("/batch_analyze", json=batch), 200, BatchData)
    error = fits(client.post("/analyze", json={"audio_data": "%%"}), 400)
    assert error.success is False and error.error_code == "INVALID_BASE64"


def test_delivery_only_responses_fit_too():
    client = create_app(Settings(emotion_inference=False), load_models="now").test_client()
    fits(client.get("/health"), 200, HealthData)
    fits(client.post("/analyze", json={"audio_data": CLIP_B64}), 200, AnalysisData)
    fits(client.post("/batch_analyze", json={"audio_segments": [CLIP_B64, CLIP_B64]}), 200, BatchData)


def test_request_models_validate_json_bodies(client):
    response = client.post("/analyze", json={"audio_data": CLIP_B64, "lang": "fr"})
    assert fits(response, 400).error_code == "INVALID_LANG"
    response = client.post("/analyze", json={"audio_data": ["not", "a", "string"]})
    assert fits(response, 400).error_code == "INVALID_AUDIO_DATA"


def test_docs_are_served_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.get_data(as_text=True)
    script = client.get("/docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.get_data()) > 100_000
    script.close()
    assert client.get("/docs/../../../etc/passwd").status_code == 404


def test_docs_need_no_key_but_the_api_does():
    analyzer = SpeechEmotionAnalyzer.from_models({"standin": StandInModel()})
    client = create_app(Settings(api_keys=("k" * 24,)), analyzer).test_client()
    assert client.get("/openapi.json").status_code == 200
    assert client.post("/analyze", json={"audio_data": CLIP_B64}).status_code == 401
