"""The result cache: identical audio is analysed once, whatever its encoding."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.analysis.cache import MemoryCache, cache_key

from .conftest import StandInModel
from .signals import encode, voice_like


@pytest.fixture
def cached_analyzer():
    model = StandInModel()
    return SpeechEmotionAnalyzer.from_models({"standin": model}, cache=MemoryCache(8)), model


def test_same_audio_in_another_encoding_is_a_hit(cached_analyzer):
    analyzer, model = cached_analyzer
    signal = (voice_like(1.5) * 32767).astype(np.int16)  # the same 16-bit samples in both files
    first = analyzer.analyze(encode(signal, format="WAV"))
    second = analyzer.analyze(encode(signal, format="FLAC"))
    assert (first.cached, second.cached) == (False, True)
    assert len(model.calls) == 1
    assert second.ensemble == first.ensemble
    assert second.delivery == first.delivery
    assert analyzer.analyze(encode(voice_like(1.5, seed=3))).cached is False
    assert len(model.calls) == 2


def test_sessions_are_cached_as_a_whole(cached_analyzer):
    analyzer, model = cached_analyzer
    a, b = encode(voice_like(1.0, seed=1)), encode(voice_like(1.0, seed=2))
    analyzer.analyze_session([a, b])
    again = analyzer.analyze_session([a, b])
    assert all(s.result.cached for s in again.segments)
    assert model.calls == [(2, True)]
    # The same clips with another companion are normalised differently: not a hit.
    other = analyzer.analyze_session([a, encode(voice_like(1.0, seed=4))])
    assert not any(s.result.cached for s in other.segments)


def test_key_depends_on_models_and_options():
    signal = voice_like(0.5)
    base = cache_key([signal], 0, [("m", "1")])
    assert base == cache_key([signal.copy()], 0, [("m", "1")])
    assert base != cache_key([signal], 0, [("m", "2")])
    assert base != cache_key([signal], 0, [("m", "1")], "session")
    assert base != cache_key([signal[:-1]], 0, [("m", "1")])


def test_lru_evicts_oldest():
    cache = MemoryCache(2)
    cache.set("a", {"v": 1})
    cache.set("b", {"v": 2})
    assert cache.get("a") == {"v": 1}  # a is now the most recent
    cache.set("c", {"v": 3})
    assert cache.get("b") is None and cache.get("a") == {"v": 1} and len(cache) == 2
