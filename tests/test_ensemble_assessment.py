from __future__ import annotations

import pytest

from emotion_service.analysis.assessment import assess, emotion_score, emotion_type, summarise_session
from emotion_service.analysis.ensemble import ModelResult, combine
from emotion_service.labels import CANONICAL_LABELS, canonical_label
from emotion_service.models.base import ModelOutput


def result(name: str, probabilities: dict[str, float], **dims) -> ModelResult:
    return ModelResult(name, name.upper(), ModelOutput(probabilities, **dims), 0.01)


def test_labels_map_by_name():
    assert canonical_label("neu") == "neutral"
    assert canonical_label("Happiness") == "happy"
    assert canonical_label("ANG") == "angry"
    assert canonical_label("surprise") == "surprised"
    assert canonical_label("02_fearful") == "fearful"
    assert canonical_label("高兴") == "happy"
    assert canonical_label("LABEL_0") is None


def test_a_model_without_a_label_does_not_vote_against_it():
    eight = result("eight", {label: (0.44 if label == "calm" else 0.08) for label in CANONICAL_LABELS})
    four = result("four", {"neutral": 0.4, "happy": 0.2, "angry": 0.2, "sad": 0.2})
    verdict = combine([eight, four], {"eight": 1.0, "four": 1.0})
    # calm is scored by the 8-class model alone: 0.44, not (0.44 + 0) / 2.
    raw_calm, raw_neutral = 0.44, (0.08 + 0.4) / 2
    assert verdict.probabilities["calm"] / verdict.probabilities["neutral"] == pytest.approx(raw_calm / raw_neutral)
    assert verdict.label == "calm"
    assert sum(verdict.probabilities.values()) == pytest.approx(1)
    assert verdict.best_model == "EIGHT"
    assert verdict.consensus is True  # the 4-class model cannot say calm, so it does not break consensus
    assert verdict.agreement == pytest.approx(0.5)


def test_weights_and_consensus():
    a = result("a", {"happy": 0.7, "sad": 0.3})
    b = result("b", {"happy": 0.2, "sad": 0.8})
    assert combine([a, b], {"a": 3.0, "b": 1.0}).label == "happy"
    verdict = combine([a, b], {"a": 1.0, "b": 3.0})
    assert verdict.label == "sad"
    assert verdict.consensus is False
    assert verdict.best_model == "B"
    assert verdict.average_confidence == pytest.approx((0.7 + 0.8) / 2)


def test_dimensions_average_only_over_models_that_give_them():
    a = result("a", {"happy": 1.0}, arousal=0.8, valence=0.9)
    b = result("b", {"happy": 1.0})
    verdict = combine([a, b], {})
    assert (verdict.arousal, verdict.valence) == (0.8, 0.9)
    assert combine([b], {}).arousal is None


def test_score_and_type_follow_the_documented_rules():
    assert emotion_score({"happy": 1.0}) == 95.0
    assert emotion_score({"happy": 0.5, "angry": 0.5}) == 62.5
    assert emotion_type({"sad": 0.3, "angry": 0.3, "happy": 0.4}) == "negative"
    assert emotion_type({"neutral": 0.6, "sad": 0.4}) == "neutral"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_assessment_levels_and_advice(lang):
    sure = combine([result("a", {"happy": 0.9, "sad": 0.1})], {})
    a = assess(sure, lang=lang)
    assert (a.emotion_type, a.confidence_level) == ("positive", "high")
    assert "90%" in a.recommendations[0]
    unsure = combine([result("a", {"happy": 0.35, "sad": 0.33, "angry": 0.32})], {})
    a = assess(unsure, lang=lang)
    assert a.confidence_level == "low"
    assert len(a.recommendations) == 2
    split = combine([result("a", {"happy": 0.7, "sad": 0.3}), result("b", {"happy": 0.35, "sad": 0.65})], {})
    assert assess(split, lang=lang).confidence_level == "medium"  # models disagree: never high


def test_session_summary():
    happy = combine([result("a", {"happy": 0.8, "sad": 0.2})], {})
    sad = combine([result("a", {"happy": 0.1, "sad": 0.9})], {})
    summary = summarise_session([happy, happy, sad, happy], [2.0, 2.0, 1.0, 3.0], lang="en")
    assert summary.dominant_label == "happy"
    assert summary.stability.dominant_share == pytest.approx(7 / 8)
    assert summary.stability.changes == 2
    # Two transitions of total-variation 0.7 each, one of 0: mean 1.4 / 3.
    assert summary.stability.score == pytest.approx(1 - 1.4 / 3)
    assert summary.total_duration == 8.0
    assert any("3" in r and "negative" in r for r in summary.recommendations)
    steady = summarise_session([happy], [1.0])
    assert steady.stability.score == 1.0 and steady.stability.changes == 0
