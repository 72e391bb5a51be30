"""Acoustic features shared by training and inference of the bundled model.

Training (:mod:`emotion_service.train`) and the service (:mod:`emotion_service.models.bundled`)
both call these functions, so the features a model was trained on and the features it sees in
production cannot drift apart. The mel filterbank and window are computed once and the STFT is
torch's, so a 5 s clip costs about a millisecond.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config import SAMPLING_RATE


@dataclass(frozen=True)
class MelConfig:
    """Log-mel parameters; stored in the model file so inference uses the training values."""

    n_fft: int = 512  # 32 ms
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 8_000.0
    trim_db: float = 40.0  # frames this far under the loudest one, at the ends, are dropped


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: MelConfig = MelConfig()) -> np.ndarray:
    """Triangular HTK-style mel filters, area-normalised; shape (n_mels, n_fft // 2 + 1)."""
    freqs = np.linspace(0.0, SAMPLING_RATE / 2, config.n_fft // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(config.fmin)), _hz_to_mel(np.array(config.fmax)), config.n_mels + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (upper - lower)  # equal area, so wide high bands do not dominate
    return filters.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _window(config: MelConfig) -> np.ndarray:
    window = np.zeros(config.n_fft, dtype=np.float32)
    offset = (config.n_fft - config.win_length) // 2
    window[offset : offset + config.win_length] = np.hanning(config.win_length + 2)[1:-1]
    return window


def log_mel(signal: np.ndarray, config: MelConfig = MelConfig()) -> np.ndarray:
    """Log-mel power spectrogram of a 16 kHz mono signal, shape (n_mels, frames), float32.

    Clips shorter than one window are zero-padded to one frame, so every input gives features.
    """
    signal = np.asarray(signal, dtype=np.float32).reshape(-1)
    if signal.size < config.n_fft:
        signal = np.pad(signal, (0, config.n_fft - signal.size))
    if not signal.flags.writeable:  # torch.from_numpy warns about read-only arrays
        signal = signal.copy()
    # torch's FFT is about four times faster than numpy's here and gives the same values.
    spectrum = torch.stft(
        torch.from_numpy(signal),
        config.n_fft,
        config.hop_length,
        window=torch.from_numpy(_window(config)),
        center=False,
        return_complex=True,
    )
    power = spectrum.real**2 + spectrum.imag**2
    mel = torch.from_numpy(mel_filterbank(config)) @ power
    return torch.log(mel + 1e-8).numpy()


def trim_silence(features: np.ndarray, config: MelConfig = MelConfig(), min_frames: int = 50) -> np.ndarray:
    """Drop leading and trailing frames far quieter than the loudest frame.

    Recordings start and end with silence of varying length; the model should look at speech.
    Frames in the middle are kept, so pauses (which carry emotion) stay.
    """
    if features.shape[1] <= min_frames:
        return features
    energy = np.log(np.exp(features).sum(axis=0) + 1e-8)
    loud = np.flatnonzero(energy > energy.max() - config.trim_db * np.log(10.0) / 10.0)
    start, stop = int(loud[0]), int(loud[-1]) + 1
    if stop - start < min_frames:
        centre = (start + stop) // 2
        start = max(0, min(centre - min_frames // 2, features.shape[1] - min_frames))
        stop = start + min_frames
    return features[:, start:stop]


@dataclass(frozen=True)
class Normaliser:
    """Mean and standard deviation per mel band, taken over one clip or one speaker's clips."""

    mean: np.ndarray  # (n_mels, 1)
    std: np.ndarray  # (n_mels, 1)

    @classmethod
    def fit(cls, features: Sequence[np.ndarray]) -> Normaliser:
        """Statistics over all frames of ``features`` (one clip, or all clips of one speaker)."""
        frames = np.concatenate([f for f in features], axis=1)
        mean = frames.mean(axis=1, keepdims=True)
        # A floor keeps silent or synthetic bands from blowing up.
        std = np.maximum(frames.std(axis=1, keepdims=True), 0.1)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32, copy=False)


def clip_features(signal: np.ndarray, config: MelConfig = MelConfig()) -> np.ndarray:
    """Trimmed log-mel of one clip, not yet normalised."""
    return trim_silence(log_mel(signal, config), config)


def normalise(features: Sequence[np.ndarray], *, same_speaker: bool = False) -> list[np.ndarray]:
    """Normalise each clip by its own statistics, or all clips by their pooled statistics.

    Args:
        features: Trimmed log-mels (n_mels, frames).
        same_speaker: The clips come from one speaker: use that speaker's statistics, which keeps
            the differences between the speaker's clips (louder, higher) that per-clip
            normalisation removes.
    """
    if same_speaker:
        normaliser = Normaliser.fit(features)
        return [normaliser(f) for f in features]
    return [Normaliser.fit([f])(f) for f in features]


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    basis = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def mfcc_statistics(features: np.ndarray, n_mfcc: int = 20) -> np.ndarray:
    """Mean and standard deviation of MFCCs and their deltas: the plain baseline's features."""
    mfcc = _dct_matrix(features.shape[0], n_mfcc) @ features
    delta = np.diff(mfcc, axis=1, prepend=mfcc[:, :1])
    return np.concatenate([mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1)]).astype(np.float32)
