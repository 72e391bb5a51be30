"""Uploads crafted to cost the most decoding per byte, in every format the service reads.

Each is generated (never a recording): constant or silent content at the highest rate and channel
count a format allows and the lowest bitrate its encoder goes to, so that few bytes decode to many
samples. Used by tests/test_decode_cost.py (short clips) and bench/decode_cost.py (full length).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf

from emotion_service.audio.decode import AudioLimits, decode_audio
from emotion_service.errors import InvalidAudio, PayloadTooLarge

from .signals import voice_like


def soundfile_bytes(rate: int, channels: int, seconds: float, fmt: str, subtype: str | None, value: float) -> bytes:
    """Constant samples written one second at a time (libsndfile's Vorbis encoder crashes on long writes)."""
    buffer = io.BytesIO()
    block = np.full((rate, channels), value, np.float32)
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype) as out:
        for _ in range(int(seconds)):
            out.write(block)
    return buffer.getvalue()


def pyav_bytes(
    rate: int,
    layout: str,
    seconds: float,
    container: str,
    codec: str,
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
    signal: np.ndarray | None = None,
) -> bytes:
    """Silence (or ``signal``, mono) encoded with PyAV at ``bit_rate``, one second per frame batch."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options or {})
        if bit_rate:
            stream.bit_rate = bit_rate
        channels = stream.codec_context.layout.nb_channels
        size = stream.codec_context.frame_size or 1024
        pts = 0
        total = int(seconds * rate)
        while pts < total:
            chunk = np.zeros((size, channels), np.float32)
            if signal is not None:
                part = signal[pts : pts + size]
                chunk[: len(part)] = part[:, None]
            # Packed: PyAV 18 mishandles planar frames of 8 channels.
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout=layout)
            frame.sample_rate = rate
            frame.pts = pts
            pts += size
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """A crafted upload: its format, how it is built, and how many seconds of audio it holds."""

    name: str
    format: str
    seconds: float
    build: Callable[[float], bytes]


def crafted(seconds: float) -> list[Case]:
    """The expensive uploads, each holding ``seconds`` of audio (the limit, for the worst case)."""
    s = seconds

    def fit(bytes_per_second: float) -> float:
        # Uncompressed WAV costs most at the largest upload accepted (MAX_UPLOAD_MB, 25 MB).
        return min(s, int(24e6 / bytes_per_second))

    return [
        Case("wav 16-bit 192 kHz mono", "wav", fit(384e3), lambda s: soundfile_bytes(192_000, 1, s, "WAV", "PCM_16", 0.25)),
        Case("wav 8-bit 48 kHz 32 channels", "wav", fit(1536e3), lambda s: soundfile_bytes(48_000, 32, s, "WAV", "PCM_U8", 0.25)),
        Case(
            "wav IMA ADPCM 192 kHz stereo", "wav", fit(193e3),
            lambda s: soundfile_bytes(192_000, 2, s, "WAV", "IMA_ADPCM", 0.25),
        ),
        Case("wav GSM 6.10 8 kHz", "wav", s, lambda s: soundfile_bytes(8_000, 1, s, "WAV", "GSM610", 0.25)),
        Case("flac constant 16 kHz mono", "flac", s, lambda s: soundfile_bytes(16_000, 1, s, "FLAC", "PCM_16", 0.25)),
        Case("flac constant 192 kHz mono", "flac", s, lambda s: soundfile_bytes(192_000, 1, s, "FLAC", "PCM_16", 0.25)),
        Case("flac constant 96 kHz stereo", "flac", s, lambda s: soundfile_bytes(96_000, 2, s, "FLAC", "PCM_16", 0.25)),
        Case("flac constant 48 kHz 6 ch", "flac", s, lambda s: soundfile_bytes(48_000, 6, s, "FLAC", "PCM_16", 0.25)),
        Case("flac constant 192 kHz 8 ch", "flac", s, lambda s: soundfile_bytes(192_000, 8, s, "FLAC", "PCM_16", 0.25)),
        Case("mp3 silence 48 kHz stereo 32 kbit/s", "mp3", s, lambda s: pyav_bytes(48_000, "stereo", s, "mp3", "libmp3lame", 32_000)),
        Case("mp3 silence 8 kHz mono 8 kbit/s", "mp3", s, lambda s: pyav_bytes(8_000, "mono", s, "mp3", "libmp3lame", 8_000)),
        Case("m4a aac silence 96 kHz stereo", "m4a", s, lambda s: pyav_bytes(96_000, "stereo", s, "mp4", "aac", 16_000)),
        Case("m4a aac silence 48 kHz 7.1", "m4a", s, lambda s: pyav_bytes(48_000, "7.1", s, "mp4", "aac", 32_000)),
        Case("ogg vorbis constant 192 kHz mono", "ogg", s, lambda s: soundfile_bytes(192_000, 1, s, "OGG", "VORBIS", 0.25)),
        Case("ogg vorbis constant 48 kHz 8 ch", "ogg", s, lambda s: soundfile_bytes(48_000, 8, s, "OGG", "VORBIS", 0.25)),
        Case(
            "ogg opus silence stereo 6 kbit/s", "ogg", s,
            lambda s: pyav_bytes(48_000, "stereo", s, "ogg", "libopus", 6_000),
        ),
        Case(
            "ogg opus silence 7.1 DTX", "ogg", s,
            lambda s: pyav_bytes(48_000, "7.1", s, "ogg", "libopus", 6_000, {"dtx": "1"}),
        ),
        Case(
            "webm opus silence mono 120 ms frames", "webm", s,
            lambda s: pyav_bytes(48_000, "mono", s, "webm", "libopus", 6_000, {"frame_duration": "120"}),
        ),
    ]  # fmt: skip


def ordinary(fmt: str, seconds: float) -> bytes:
    """A plain recording of ``seconds`` in ``fmt``: speech-like 48 kHz stereo at the encoder's usual bitrate."""
    voice = voice_like(seconds, rate=48_000)
    stereo = np.stack([voice, voice], axis=1)
    if fmt in ("wav", "flac"):
        buffer = io.BytesIO()
        sf.write(buffer, stereo, 48_000, format=fmt.upper(), subtype="PCM_16")
        return buffer.getvalue()
    container, codec = {"mp3": ("mp3", "libmp3lame"), "m4a": ("mp4", "aac"), "ogg": ("ogg", "libopus"), "webm": ("webm", "libopus")}[fmt]  # fmt: skip
    return pyav_bytes(48_000, "stereo", seconds, container, codec, 128_000, signal=voice)


@dataclass(frozen=True)
class Cost:
    outcome: str  # "ok" or the error code
    cpu_seconds: float
    size: int


def decode_cost(data: bytes, limits: AudioLimits, repeat: int = 1) -> Cost:
    """CPU seconds of this process to decode ``data`` (the least of ``repeat`` runs), and the outcome."""
    best = float("inf")
    outcome = "ok"
    for _ in range(repeat):
        started = time.process_time()
        try:
            decode_audio(data, limits)
            outcome = "ok"
        except (InvalidAudio, PayloadTooLarge) as error:
            outcome = error.error_code
        best = min(best, time.process_time() - started)
    return Cost(outcome, best, len(data))
