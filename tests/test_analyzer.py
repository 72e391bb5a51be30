"""The analyzer as a library: paths, arrays, bytes, sessions."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from emotion_service.errors import InvalidAudio, ModelUnavailable

from .signals import encode, voice_like


def test_path_array_and_bytes_agree(analyzer, tmp_path):
    signal = voice_like(2.0)
    path = tmp_path / "clip.flac"
    sf.write(path, signal, 16000)
    from_path = analyzer.analyze(str(path))
    from_array = analyzer.analyze(signal, sampling_rate=16000)
    from_bytes = analyzer.analyze(encode(signal, format="FLAC"))
    for other in (from_array, from_bytes):
        for a, b in zip(from_path.models, other.models, strict=True):
            assert a.output.probabilities == pytest.approx(b.output.probabilities, abs=1e-4)
    assert from_path.audio.format == "flac"


def test_array_at_another_rate_is_resampled(analyzer):
    result = analyzer.analyze(voice_like(2.0, rate=44100), sampling_rate=44100)
    assert result.audio.sampling_rate == 16000
    assert result.audio.duration == pytest.approx(2.0, abs=0.01)


def test_array_needs_its_rate(analyzer):
    with pytest.raises(InvalidAudio, match="sampling_rate"):
        analyzer.analyze(voice_like(1.0))


def test_silence_is_refused(analyzer):
    with pytest.raises(InvalidAudio) as info:
        analyzer.analyze(np.zeros(16000, np.float32), sampling_rate=16000)
    assert info.value.error_code == "SILENT_AUDIO"


def test_session_keeps_order_and_errors(analyzer):
    good = encode(voice_like(1.0))
    session = analyzer.analyze_session([good, b"junk" * 40, good])
    assert [s.index for s in session.segments] == [0, 1, 2]
    assert session.segments[1].error is not None and session.segments[1].result is None
    assert session.summary is not None and session.summary.segments == 2


def test_unknown_preset_fails_early():
    from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
    from emotion_service.errors import ConfigError

    with pytest.raises(ConfigError, match="MODEL_PRESET"):
        SpeechEmotionAnalyzer("nope", load=False)


def test_unloadable_preset_reports_failures(monkeypatch):
    from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    analyzer = SpeechEmotionAnalyzer("full", models_dir="/nonexistent-models-dir")
    assert analyzer.models == {}
    assert {f.name for f in analyzer.failures} == {"exhubert", "hubert_large", "wav2vec2_xlsr"}
    with pytest.raises(ModelUnavailable, match="hubert_large"):
        analyzer.analyze(voice_like(1.0), sampling_rate=16000)


def test_delivery_metrics_come_with_every_result(analyzer):
    rng = np.random.default_rng(0)
    gap = (1e-4 * rng.standard_normal(16000)).astype(np.float32)
    result = analyzer.analyze(np.concatenate([voice_like(1.5), gap, voice_like(1.5, seed=1)]), sampling_rate=16000)
    assert result.delivery is not None
    assert result.delivery.pause_count == 1
    assert result.delivery.pauses[0].duration == pytest.approx(1.0, abs=0.15)
    assert result.delivery.pitch_median == pytest.approx(150, rel=0.1)


def test_models_hear_only_speech_when_model_input_is_speech():
    """MODEL_INPUT=speech: leading, trailing and long inner silences never reach the models."""
    from emotion_service.models.base import EmotionModel, ModelInfo, ModelOutput

    class Recording(EmotionModel):
        info = ModelInfo("rec", "Rec", "memory", "t", "MIT", ("neutral",))

        def __init__(self):
            self.lengths = []

        def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
            self.lengths += [len(s) for s in signals]
            return [ModelOutput({"neutral": 1.0}) for _ in signals]

    from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer

    from .signals import voice_like

    silence = np.zeros(32_000, dtype=np.float32)
    clip = np.concatenate([silence, voice_like(1.0, seed=1), silence, voice_like(1.0, seed=2), silence])
    model = Recording()
    analyzer = SpeechEmotionAnalyzer.from_models({"rec": model})
    whole = analyzer.analyze(clip, 16_000)
    analyzer.speech_only = True
    trimmed = analyzer.analyze(clip, 16_000)
    assert model.lengths[0] == len(clip)
    assert 32_000 <= model.lengths[1] <= 32_000 + 16_000  # the two seconds of speech, with a little padding
    assert whole.delivery.duration == trimmed.delivery.duration == pytest.approx(len(clip) / 16_000)
