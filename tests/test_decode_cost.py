"""Decoding costs CPU in proportion to the audio the service analyses, not to what a file claims.

Every upload in tests/expensive_audio.py is crafted to decode to as many samples per byte as its
format allows (constant FLAC frames, silent Opus with DTX, AAC at 96 kHz, 7.1 and 32-channel files,
ADPCM, GSM). Each must cost no more than 2 s of CPU per MB of upload, or else no more than 3x what
decoding the same length of an ordinary 48 kHz stereo recording in that format costs (measured
here, in the same process, so that a slow or busy machine moves both sides). Full-length figures:
``python bench/decode_cost.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from emotion_service.audio.decode import MAX_SAMPLING_RATE, AudioLimits, decode_audio
from emotion_service.errors import InvalidAudio

from .expensive_audio import crafted, decode_cost, ordinary, soundfile_bytes
from .signals import encode

SECONDS = 30.0
LIMITS = AudioLimits(max_seconds=SECONDS)
CPU_PER_MB = 2.0
TIMES_REFERENCE = 3.0


@pytest.fixture(scope="module")
def reference() -> dict[str, float]:
    """CPU seconds per second of audio to decode an ordinary recording, per format."""
    costs = {}
    for fmt in ("wav", "flac", "mp3", "m4a", "ogg", "webm"):
        cost = decode_cost(ordinary(fmt, 10.0), LIMITS, repeat=3)
        assert cost.outcome == "ok", (fmt, cost)
        costs[fmt] = cost.cpu_seconds / 10.0
    return costs


@pytest.mark.parametrize("case", crafted(SECONDS - 1), ids=lambda case: case.name)
def test_crafted_uploads_cost_cpu_in_proportion_to_their_audio(case, reference):
    data = case.build(case.seconds)
    cost = decode_cost(data, LIMITS, repeat=3)
    per_mb = cost.cpu_seconds / (len(data) / 1e6)
    times = cost.cpu_seconds / (reference[case.format] * min(case.seconds, SECONDS))
    print(f"{case.name}: {len(data) / 1e3:.1f} kB -> {cost.outcome}, {cost.cpu_seconds * 1e3:.1f} ms of CPU, "
          f"{per_mb:.2f} s/MB, {times:.2f}x an ordinary recording")  # fmt: skip
    assert per_mb <= CPU_PER_MB or times <= TIMES_REFERENCE, (case.name, cost, per_mb, times)


def test_rates_above_192_khz_are_refused_from_the_header_saying_what_to_send():
    data = soundfile_bytes(MAX_SAMPLING_RATE + 1, 1, 1, "WAV", "PCM_16", 0.25)
    with pytest.raises(InvalidAudio) as caught:
        decode_audio(data, LIMITS)
    assert caught.value.error_code == "UNSUPPORTED_SAMPLE_RATE"
    assert "192000 Hz" in caught.value.message and "16000 Hz" in caught.value.message
    assert decode_audio(soundfile_bytes(MAX_SAMPLING_RATE, 1, 1, "WAV", "PCM_16", 0.25), LIMITS).duration == 1.0


def test_a_dense_file_is_refused_once_its_samples_outgrow_its_size():
    # 192 kHz x 8 channels of constant FLAC: ~1 kB per second for 1.5 M samples per second.
    data = soundfile_bytes(192_000, 8, 20, "FLAC", "PCM_16", 0.25)
    with pytest.raises(InvalidAudio) as caught:
        decode_audio(data, LIMITS)
    assert caught.value.error_code == "UNSUPPORTED_SAMPLE_RATE"
    assert "48 kHz stereo or less" in caught.value.message
    # The same channels and rate with real (incompressible) content pay for themselves.
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (192_000, 8)).astype(np.float32)
    assert decode_audio(encode(noise, 192_000, "FLAC"), LIMITS).channels == 8
