"""Property-based fuzzing of the audio decoder: random and mutated WAV/FLAC/MP3/M4A/OGG bytes.

Whatever the bytes, decoding either returns finite 16 kHz mono samples within the limits or
raises one of the service's own 4xx errors — never another exception, never a hang.
Bounded: a fixed number of examples per property, each with a deadline.
"""

from __future__ import annotations

import base64
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emotion_service.audio.decode import AudioLimits, decode_audio, decode_base64
from emotion_service.errors import InvalidAudio, PayloadTooLarge

from .signals import encode, voice_like
from .test_audio import pyav_encode, tone

LIMITS = AudioLimits(max_bytes=2_000_000, min_seconds=0.2, max_seconds=20)
SEEDS = {
    "wav": encode(voice_like(0.6), format="WAV"),
    "wav-float-stereo": encode(
        np.stack([voice_like(0.6), voice_like(0.6, seed=1)], axis=1), format="WAV", subtype="FLOAT"
    ),
    "flac": encode(voice_like(0.6), format="FLAC"),
    "mp3": encode(voice_like(0.6), format="MP3"),
    "ogg": encode(voice_like(0.6), format="OGG", subtype="VORBIS"),
    "m4a": pyav_encode(tone(0.6, 44_100), 44_100, "mp4", "aac"),
    "webm": pyav_encode(tone(0.6, 48_000), 48_000, "webm", "libopus"),
}
FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def check(data: bytes) -> None:
    started = time.perf_counter()
    try:
        decoded = decode_audio(data, LIMITS)
    except (InvalidAudio, PayloadTooLarge) as error:
        assert 400 <= error.status < 500 and error.message
    else:
        assert decoded.sampling_rate == 16_000 and decoded.signal.ndim == 1
        assert np.isfinite(decoded.signal).all()
        assert decoded.duration <= LIMITS.max_seconds + 0.5
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("kind", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_files(kind, data):
    seed = bytearray(SEEDS[kind])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), max_size=30))
    for position, value in flips:
        seed[position] = value
    cut = data.draw(st.integers(1, len(seed)))
    check(bytes(seed[:cut]))


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(blob):
    check(blob)


@FUZZ
@given(
    prefix=st.sampled_from([b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf1", b"\x1aE\xdf\xa3", b"FORM"]),
    rest=st.binary(max_size=2048),
)
def test_magic_numbers_with_garbage(prefix, rest):
    check(prefix + rest)


@FUZZ
@given(
    channels=st.integers(0, 65535),
    rate=st.integers(0, 2**32 - 1),
    bits=st.sampled_from([0, 1, 8, 16, 24, 32, 64, 65535]),
    fmt=st.sampled_from([1, 3, 0xFFFE, 0, 2]),
    size=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=2048),
)
def test_lying_wav_headers(channels, rate, bits, fmt, size, payload):
    """Headers that claim billions of channels, absurd rates or hours of audio in a few bytes."""
    block = (channels * bits // 8) & 0xFFFF
    header = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    data = b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + header
    check(data + b"data" + struct.pack("<I", size) + payload)


@FUZZ
@given(st.text(max_size=300))
def test_base64_never_escapes(text):
    try:
        decode_base64(text)
    except InvalidAudio as error:
        assert error.error_code in ("INVALID_BASE64", "EMPTY_AUDIO")


def test_huge_base64_is_linear():
    blob = base64.b64encode(bytes(3_000_000)).decode()
    started = time.perf_counter()
    assert len(decode_base64("data:audio/wav;base64," + blob)) == 3_000_000
    assert time.perf_counter() - started < 2
