"""Speech segments of generated recordings with known speech and silences."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_service.segmentation import SegmentOptions, find_speech

from .signals import voice_like

RATE = 16_000


def quiet(seconds: float) -> np.ndarray:
    return (1e-4 * np.random.default_rng(0).standard_normal(int(seconds * RATE))).astype(np.float32)


def test_segments_follow_known_speech():
    # speech 2 s, silence 1.5 s, speech 3 s, silence 0.3 s (too short to split), speech 1 s, silence 2 s
    x = np.concatenate(
        [quiet(0.5), voice_like(2.0), quiet(1.5), voice_like(3.0), quiet(0.3), voice_like(1.0), quiet(2.0)]
    )
    segments = find_speech(x, options=SegmentOptions(padding=0.0))
    assert len(segments) == 2
    # voice_like fades in and out over ~0.1 s: boundaries within 0.15 s
    assert segments[0].start == pytest.approx(0.5, abs=0.15) and segments[0].end == pytest.approx(2.5, abs=0.15)
    assert segments[1].start == pytest.approx(4.0, abs=0.15) and segments[1].end == pytest.approx(8.3, abs=0.15)


def test_long_speech_is_cut_without_overlap():
    x = np.concatenate([voice_like(47.0), quiet(1.0)])
    segments = find_speech(x, options=SegmentOptions(max_segment=10.0))
    assert all(s.duration <= 10.0 + 1e-6 for s in segments)
    assert sum(s.duration for s in segments) == pytest.approx(47.0, abs=0.3)
    for a, b in zip(segments, segments[1:], strict=False):
        assert b.start >= a.end - 1e-9


def test_clicks_are_dropped_and_padding_stays_inside():
    click = np.zeros(RATE, np.float32)
    click[RATE // 2 : RATE // 2 + 80] = 0.8
    x = np.concatenate([voice_like(1.0), quiet(1.0), click, quiet(1.0)])
    segments = find_speech(x, options=SegmentOptions(padding=0.2))
    assert len(segments) == 1 and segments[0].start == 0.0
    assert len(segments[0].slice(x)) == pytest.approx(segments[0].duration * RATE, abs=2)
