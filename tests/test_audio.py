"""Decoding every format a client may send, and refusing every kind of bad input."""

from __future__ import annotations

import base64
import io
import struct
import time

import av
import numpy as np
import pytest

from emotion_service.audio.decode import (
    AudioLimits,
    decode_audio,
    decode_base64,
    load_audio,
    prepare_signal,
    sniff_format,
)
from emotion_service.errors import InvalidAudio, PayloadTooLarge

from .signals import encode, voice_like


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def peak_hz(signal: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * rate / len(signal))


def pyav_encode(signal: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    """Encode (frames, channels) or (frames,) float32 with PyAV, as a browser or phone would."""
    planar = np.ascontiguousarray(np.atleast_2d(signal.T if signal.ndim == 2 else signal), dtype=np.float32)
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


SOUNDFILE_CASES = [
    ("wav", 16_000, 1, "WAV", "PCM_16"),
    ("wav", 44_100, 2, "WAV", "PCM_24"),
    ("wav", 8_000, 1, "WAV", "PCM_U8"),
    ("wav", 48_000, 2, "WAV", "FLOAT"),
    ("flac", 22_050, 2, "FLAC", None),
    ("ogg", 48_000, 1, "OGG", "VORBIS"),
    ("ogg", 48_000, 2, "OGG", "OPUS"),
    ("mp3", 44_100, 2, "MP3", None),
    ("aiff", 32_000, 1, "AIFF", None),
]


@pytest.mark.parametrize(
    "fmt,rate,channels,container,subtype",
    SOUNDFILE_CASES,
    ids=[f"{c[3]}-{c[4]}-{c[1]}-{c[2]}ch" for c in SOUNDFILE_CASES],
)
def test_soundfile_formats(fmt, rate, channels, container, subtype):
    data = encode(tone(2.0, rate, channels=channels), rate=rate, format=container, subtype=subtype)
    assert sniff_format(data) == fmt
    decoded = decode_audio(data)
    assert decoded.format == fmt
    assert decoded.sampling_rate == 16_000 and decoded.signal.dtype == np.float32 and decoded.signal.ndim == 1
    assert decoded.original_sampling_rate == rate and decoded.channels == channels
    assert decoded.duration == pytest.approx(2.0, abs=0.08)  # lossy codecs add priming samples
    assert peak_hz(decoded.signal) == pytest.approx(440, abs=3)
    assert np.sqrt(np.mean(decoded.signal**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


PYAV_CASES = [
    ("m4a", "mp4", "aac", 44_100, 2),
    ("aac", "adts", "aac", 22_050, 1),
    ("webm", "webm", "libopus", 48_000, 2),
]


@pytest.mark.parametrize("fmt,container,codec,rate,channels", PYAV_CASES, ids=[c[0] for c in PYAV_CASES])
def test_pyav_formats(fmt, container, codec, rate, channels):
    data = pyav_encode(tone(2.0, rate, channels=channels), rate, container, codec)
    assert sniff_format(data) == fmt
    decoded = decode_audio(data)
    assert (decoded.format, decoded.channels, decoded.original_sampling_rate) == (fmt, channels, rate)
    assert decoded.duration == pytest.approx(2.0, abs=0.1)  # AAC priming: up to 2048 samples
    assert peak_hz(decoded.signal) == pytest.approx(440, abs=3)


def test_lossless_decode_matches_resampled_source():
    source = voice_like(1.5, rate=44_100)
    decoded = decode_audio(encode(source, rate=44_100, format="FLAC", subtype="PCM_24"))
    reference = prepare_signal(source, 44_100).signal
    assert np.max(np.abs(decoded.signal - reference)) < 1e-4


def test_channels_are_averaged():
    left, right = tone(1.0, 16_000, 440), tone(1.0, 16_000, 1000)
    decoded = decode_audio(encode(np.stack([left, right], axis=1), format="WAV", subtype="FLOAT"))
    assert np.allclose(decoded.signal, (left + right) / 2, atol=1e-6)
    six = decode_audio(encode(tone(1.0, 16_000, channels=6), format="WAV"))
    assert six.channels == 6


def test_arrays_in_any_layout_and_dtype():
    mono = voice_like(1.0)
    as_int16 = (mono * 32767).astype(np.int16)
    a = prepare_signal(mono, 16_000).signal
    assert np.allclose(prepare_signal(as_int16, 16_000).signal, a, atol=1e-4)
    assert np.allclose(prepare_signal(np.stack([mono, mono]), 16_000).signal, a)  # (channels, frames)
    assert np.allclose(prepare_signal(np.stack([mono, mono], axis=1), 16_000).signal, a)  # (frames, channels)
    with pytest.raises(InvalidAudio, match="sampling_rate"):
        load_audio(mono)
    with pytest.raises(InvalidAudio) as info:
        prepare_signal(np.array(["a", "b"]), 16_000)
    assert info.value.error_code == "INVALID_SAMPLES"


def test_paths(tmp_path):
    path = tmp_path / "answer.flac"
    path.write_bytes(encode(voice_like(1.0), format="FLAC"))
    assert load_audio(str(path)).format == "flac"
    assert load_audio(path).duration == pytest.approx(1.0)
    with pytest.raises(InvalidAudio) as info:
        load_audio(tmp_path / "missing.wav")
    assert info.value.error_code == "FILE_NOT_READABLE"
    with pytest.raises(PayloadTooLarge):
        load_audio(path, limits=AudioLimits(max_bytes=100))


@pytest.mark.parametrize(
    "text",
    [
        "{b64}",
        "data:audio/wav;base64,{b64}",
        "data:audio/webm;codecs=opus;base64,{b64}",
        "  {b64}\n",
        "{wrapped}",
        "{urlsafe}",
        "{unpadded}",
    ],
)
def test_base64_variants(text):
    payload = bytes(range(256)) * 3 + b"\xfb\xff"
    b64 = base64.b64encode(payload).decode()
    value = text.format(
        b64=b64,
        wrapped="\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)),
        urlsafe=base64.urlsafe_b64encode(payload).decode(),
        unpadded=b64.rstrip("="),
    )
    assert decode_base64(value) == payload


@pytest.mark.parametrize(
    "value,code",
    [
        ("", "EMPTY_AUDIO"),
        ("data:audio/wav;base64,", "EMPTY_AUDIO"),
        ("%%%%", "INVALID_BASE64"),
        ("abcde", "INVALID_BASE64"),
        ("data:audio/wav,AAAA", "INVALID_BASE64"),
        ("QUJD\u00e9", "INVALID_BASE64"),
    ],
)
def test_bad_base64(value, code):
    with pytest.raises(InvalidAudio) as info:
        decode_base64(value)
    assert info.value.error_code == code


def wav_header(channels: int, rate: int, bits: int = 16, data_bytes: int = 0xFFFFFFF0) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


LIMITS = AudioLimits(max_bytes=5_000_000, min_seconds=0.5, max_seconds=30)
CLIP = encode(voice_like(2.0))

BAD = [
    ("empty", b"", "EMPTY_AUDIO"),
    ("text", b"hello world " * 100, "UNSUPPORTED_FORMAT"),
    ("png", b"\x89PNG\r\n\x1a\n" + bytes(400), "UNSUPPORTED_FORMAT"),
    ("truncated wav header", CLIP[:30], "CORRUPT_AUDIO"),
    ("wav header only", CLIP[:44], "EMPTY_AUDIO"),
    ("truncated flac", encode(voice_like(2.0), format="FLAC")[:60], "CORRUPT_AUDIO"),
    ("mp3 sync then noise", b"\xff\xfb\x90\x00" + np.random.default_rng(1).bytes(3000), "CORRUPT_AUDIO"),
    ("m4a box then noise", b"\x00\x00\x00\x18ftypM4A " + np.random.default_rng(2).bytes(3000), "CORRUPT_AUDIO"),
    ("webm magic then zeros", b"\x1aE\xdf\xa3" + bytes(2000), "CORRUPT_AUDIO"),
    ("ogg magic then noise", b"OggS" + np.random.default_rng(3).bytes(2000), "CORRUPT_AUDIO"),
    ("wav claiming 60000 channels", wav_header(60_000, 16_000) + bytes(4000), None),
    ("wav claiming 1 Hz", wav_header(1, 1) + bytes(4000), None),
    (
        "wav claiming hours of audio",
        wav_header(1, 16_000) + encode(voice_like(0.2), subtype="PCM_16")[44:],
        "AUDIO_TOO_SHORT",
    ),
    ("silence", encode(np.zeros(32_000, np.float32)), "SILENT_AUDIO"),
    ("near-silence", encode(np.full(32_000, 1e-5, np.float32), subtype="FLOAT"), "SILENT_AUDIO"),
    ("too short", encode(voice_like(0.2)), "AUDIO_TOO_SHORT"),
    ("too long", encode(voice_like(31.0), format="FLAC"), "AUDIO_TOO_LONG"),
    ("NaN", encode(np.full(16_000, np.nan, np.float32), subtype="FLOAT"), "INVALID_SAMPLES"),
    (
        "inf",
        encode(np.where(np.arange(16_000) == 5, np.inf, 0.1).astype(np.float32), subtype="FLOAT"),
        "INVALID_SAMPLES",
    ),
]


@pytest.mark.parametrize("name,data,code", BAD, ids=[b[0] for b in BAD])
def test_bad_audio_is_refused_with_a_reason(name, data, code):
    with pytest.raises(InvalidAudio) as info:
        decode_audio(data, LIMITS)
    error = info.value
    assert error.status == 400 and len(error.message) > 20
    if code:
        assert error.error_code == code, error.message


def test_over_size_limit():
    with pytest.raises(PayloadTooLarge):
        decode_audio(b"RIFF" + bytes(5_000_001), LIMITS)


def test_decompression_bomb_stops_at_the_duration_limit():
    # 40 minutes of a constant at 8 kHz compresses to a few kB of FLAC but would be 77 MB of float32.
    bomb = encode(np.full(8_000 * 60 * 40, 0.25, np.float32), rate=8_000, format="FLAC")
    assert len(bomb) < 1_000_000
    started = time.perf_counter()
    with pytest.raises(InvalidAudio) as info:
        decode_audio(bomb, LIMITS)
    assert info.value.error_code == "AUDIO_TOO_LONG"
    assert time.perf_counter() - started < 5


def test_random_mutations_never_escape_as_other_errors():
    rng = np.random.default_rng(7)
    seeds = [
        CLIP,
        encode(voice_like(1.0), format="FLAC"),
        encode(voice_like(1.0), format="MP3"),
        pyav_encode(tone(1.0, 44_100), 44_100, "mp4", "aac"),
    ]
    for i in range(120):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if i % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        try:
            decoded = decode_audio(bytes(data), LIMITS)
        except (InvalidAudio, PayloadTooLarge):
            continue
        assert np.isfinite(decoded.signal).all() and decoded.sampling_rate == 16_000
