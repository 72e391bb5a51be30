"""Whole interviews: a generated recording with known answers, pauses, pitch and loudness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.analysis.interview import QuestionRange, analyze_interview, parse_ranges
from emotion_service.audio.segmentation import SegmentOptions
from emotion_service.errors import InvalidRequest
from emotion_service.jobs.task import run_job

from .conftest import StandInModel
from .signals import encode, voice_like

RATE = 16_000
# The generated answers are harmonic tones, not speech: the silero VAD rightly finds none in them.
ENERGY = SegmentOptions(vad="energy")


def quiet(seconds: float, seed: int = 0) -> np.ndarray:
    return (1e-4 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def steady(seconds: float, f0: float = 150.0) -> np.ndarray:
    """Speech-like bursts with a perfectly steady pitch (a flat delivery)."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * f0 * t
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))) ** 1.5
    return (0.25 * envelope * voiced).astype(np.float32)


def interview() -> tuple[np.ndarray, list[QuestionRange]]:
    """Six answers of three 2.5 s bursts; answers 3-5 pause 1.5 s inside, the others 0.4 s;
    answer 2 is flat in pitch; answer 6 is much louder. 2 s of silence between answers."""
    parts, ranges, t = [quiet(1.0)], [], 1.0
    for answer in range(1, 7):
        gap = 1.5 if answer in (3, 4, 5) else 0.4
        start = t
        for burst in range(3):
            clip = steady(2.5) if answer == 2 else voice_like(2.5, f0=140 + 10 * burst, seed=answer * 10 + burst)
            parts.append(clip * (3.0 if answer == 6 else 1.0))
            t += 2.5
            if burst < 2:
                parts.append(quiet(gap, seed=burst))
                t += gap
        ranges.append(QuestionRange(start, t, f"Q{answer}"))
        parts.append(quiet(2.0, seed=answer))
        t += 2.0
    return np.concatenate(parts), ranges


@pytest.fixture
def analyzer():
    return SpeechEmotionAnalyzer.from_models({"dims": StandInModel("dims", dims=True)})


def test_interview_with_question_ranges(analyzer):
    signal, ranges = interview()
    fractions: list[float] = []
    result = analyze_interview(
        analyzer, signal, RATE, ranges=ranges, lang="en", segments=ENERGY, progress=fractions.append
    )
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    # timeline: 1.5 s pauses split answers into segments, 0.4 s pauses do not (SegmentOptions.min_silence)
    per_question = [1, 1, 3, 3, 3, 1]
    assert [e.question for e in result.timeline] == [
        q for q, n in zip(range(1, 7), per_question, strict=True) for _ in range(n)
    ]
    assert all(a.end <= b.start for a, b in zip(result.timeline, result.timeline[1:], strict=False))

    # per-question delivery: the known pauses
    for q in result.questions:
        gap = 1.5 if q.index in (3, 4, 5) else 0.4
        assert q.delivery.pause_count == 2
        assert q.delivery.mean_pause == pytest.approx(gap, abs=0.15)
    assert result.questions[1].delivery.pitch_sd_semitones < 0.2  # the flat answer

    a = result.assessment
    codes = {r.code: r for r in a.recommendations}
    assert codes["long_pauses_q"].evidence["answers"] == [3, 4, 5]
    assert "answers 3–5" in codes["long_pauses_q"].text and "1.5 s" in codes["long_pauses_q"].text
    assert codes["flat_q"].evidence["answers"] == [2]
    # the loud answer stands out against the candidate's own arousal baseline
    assert a.moments and all(result.timeline[m.index].question == 6 for m in a.moments)
    assert all(m.dimension == "arousal" and m.z > 0 for m in a.moments)
    assert a.dimensions == "model"
    assert a.direction == "tensed"  # arousal rises at the end


def test_chinese_by_default_and_no_ranges(analyzer):
    signal, _ = interview()
    result = analyze_interview(analyzer, signal, RATE, segments=ENERGY)
    assert len(result.timeline) == 12 and all(e.question is None for e in result.timeline)
    texts = [r.text for r in result.assessment.recommendations]
    assert any("停顿" in t for t in texts)  # the 1.5 s and 2 s pauses
    assert result.delivery.pause_count >= 17


def test_run_job_returns_json(analyzer):
    signal, ranges = interview()
    options = {"lang": "en", "ranges": [[r.start, r.end] for r in ranges]}
    progress: list[float] = []
    data = run_job(analyzer, encode(signal, format="FLAC"), options, progress.append, segments=ENERGY)
    json.dumps(data)  # plain JSON
    assert len(data["timeline"]) == 12 and len(data["questions"]) == 6
    assert data["assessment"]["recommendations"][0]["code"] == "dominant"
    assert progress[-1] == 1.0


@pytest.mark.parametrize(
    "value", ["0-10", [{"start": 5, "end": 1}], [[1]], [{"start": "a", "end": 2}], [{"start": -1, "end": 2}]]
)
def test_bad_ranges(value):
    with pytest.raises(InvalidRequest):
        parse_ranges(value)


def test_range_outside_recording(analyzer):
    with pytest.raises(InvalidRequest, match="lasts"):
        analyze_interview(analyzer, voice_like(3.0), RATE, ranges=[QuestionRange(10.0, 20.0)])
