from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.audio.decode import AudioLimits
from emotion_service.config import Settings
from emotion_service.http.app import create_app
from emotion_service.labels import CANONICAL_LABELS
from emotion_service.models.base import EmotionModel, ModelInfo, ModelOutput

from .system_deps import ensure as ensure_system_programs


def pytest_sessionstart(session: pytest.Session) -> None:
    # redis-server, nginx, chromium: installed before the first test, or the run stops saying what to install.
    ensure_system_programs()


class StandInModel(EmotionModel):
    """A tiny deterministic model for HTTP-layer tests: spectral shape -> probabilities."""

    def __init__(self, name: str = "standin", labels: Sequence[str] = CANONICAL_LABELS, dims: bool = False) -> None:
        self.labels = tuple(labels)
        self.dims = dims
        self.calls: list[tuple[int, bool]] = []
        self.info = ModelInfo(name, name.title(), "memory", "test", "MIT", self.labels)

    def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
        self.calls.append((len(signals), same_speaker))
        outputs = []
        for signal in signals:
            spectrum = np.abs(np.fft.rfft(signal, n=2048))
            bands = np.array_split(spectrum, len(self.labels))
            logits = np.log1p(np.array([band.mean() for band in bands]))
            p = np.exp(logits - logits.max())
            p /= p.sum()
            outputs.append(
                ModelOutput(
                    {label: float(v) for label, v in zip(self.labels, p, strict=True)},
                    arousal=float(np.clip(np.sqrt(np.mean(signal**2)) * 4, 0, 1)) if self.dims else None,
                    valence=0.5 if self.dims else None,
                )
            )
        return outputs


@pytest.fixture
def settings() -> Settings:
    return Settings(max_upload_mb=2, max_request_mb=4, max_audio_seconds=30, max_batch_segments=5)


@pytest.fixture
def analyzer(settings: Settings) -> SpeechEmotionAnalyzer:
    limits = AudioLimits(
        max_bytes=int(settings.max_upload_mb * 1_000_000),
        min_seconds=settings.min_audio_seconds,
        max_seconds=settings.max_audio_seconds,
    )
    models = {"standin": StandInModel(), "four": StandInModel("four", ("neutral", "happy", "angry", "sad"), dims=True)}
    return SpeechEmotionAnalyzer.from_models(models, {"standin": 1.0, "four": 2.0}, limits=limits)


@pytest.fixture
def app(settings: Settings, analyzer: SpeechEmotionAnalyzer):
    return create_app(settings, analyzer)


@pytest.fixture
def client(app):
    return app.test_client()
