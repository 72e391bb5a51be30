"""Generated test signals (no recordings are ever used in tests)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

RATE = 16_000


def voice_like(seconds: float = 2.0, f0: float = 140.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding pitch with syllable-rate loudness and a little noise, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))) ** 1.5
    signal = 0.25 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def encode(signal: np.ndarray, rate: int = RATE, format: str = "WAV", subtype: str | None = None) -> bytes:
    """Encode a signal in memory with soundfile (WAV, FLAC, OGG, MP3...)."""
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def wav(seconds: float = 2.0, f0: float = 140.0, seed: int = 0) -> bytes:
    return encode(voice_like(seconds, f0, seed=seed))
