"""EMOTION_INFERENCE=off: no emotion model is loaded or run; delivery metrics are still served."""

from __future__ import annotations

import numpy as np

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.analysis.interview import analyze_interview
from emotion_service.views import analysis_json, interview_json, session_json

from .signals import encode, voice_like
from .test_interview import RATE, interview


def test_no_model_is_loaded_and_clips_get_delivery_only():
    analyzer = SpeechEmotionAnalyzer("full", emotion_inference=False)  # would need the network otherwise
    assert analyzer.models == {} and analyzer.failures == []
    result = analyzer.analyze(encode(voice_like(2.0)))
    assert result.models == [] and result.ensemble is None and result.assessment is None
    assert result.delivery is not None and result.delivery.pitch_median > 100
    data = analysis_json(result, "zh")
    assert data["final_result"] is None and data["interview_assessment"] is None
    assert data["models_results"] == [] and data["delivery"]["speech_rate"] > 0
    session = analyzer.analyze_session([encode(voice_like(1.0)), encode(voice_like(1.0, seed=1))])
    assert session.summary is None and session_json(session, "en")["results"][1]["delivery"]


def test_interviews_get_delivery_advice_only():
    analyzer = SpeechEmotionAnalyzer(emotion_inference=False)
    signal, ranges = interview()
    result = analyze_interview(analyzer, signal, RATE, ranges=ranges, lang="en")
    a = result.assessment
    assert a.dominant_label is None and a.valence is None and a.moments == []
    codes = {r.code for r in a.recommendations}
    assert "long_pauses_q" in codes and "flat_q" in codes
    assert not codes & {"dominant", "moment", "tensed", "settled", "weak_signal"}
    data = interview_json(result, "en")
    assert all(e["emotion_label"] is None and e["delivery"] for e in data["timeline"])
    assert np.isclose(data["questions"][2]["delivery"]["mean_pause"], 1.5, atol=0.15)
