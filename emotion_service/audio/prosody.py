"""Delivery metrics: model-free, language-independent measurements of how something was said.

Speaking time and pauses, speaking rate from syllable-like nuclei, pitch level and variability in
semitones, loudness and its variability, and voice breaks — the measurements interview advice
can cite. The methods follow ``../shared/DELIVERY.md``:

- intensity contour in dB (frames of 20 ms every 10 ms); silence is what lies more than
  ``silence_db`` below the 0.99 quantile of the recording's own intensity, so the threshold
  follows the microphone level; pauses are silences of at least ``min_pause`` seconds between
  speech;
- syllable nuclei after de Jong & Wempe (2009): voiced intensity peaks above the silence threshold
  whose dip to the next peak exceeds ``nucleus_dip_db``;
- pitch by normalised autocorrelation (YIN's cumulative-mean difference) on 8 kHz audio, with a
  per-speaker range set in two passes (floor = 0.75 x Q1, ceiling = 1.5 x Q3);
- voice breaks: unvoiced stretches longer than ``voice_break`` seconds inside speech.

Everything is vectorised numpy; a minute of audio takes a few hundred milliseconds at most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from ..config import SAMPLING_RATE

_RATE = 8_000  # pitch and intensity need nothing above 4 kHz
_HOP = 80  # 10 ms
_FRAME = 320  # 40 ms for pitch: two periods of a 50 Hz voice
_LOUDNESS_FRAME = 160  # 20 ms for intensity: a longer window would blur pause edges
_CHUNK_FRAMES = 1_000  # 10 s of frames per block: bounded memory whatever the length


@dataclass(frozen=True)
class ProsodyOptions:
    """Settings of the delivery measurements (defaults from DELIVERY.md).

    Attributes:
        min_pause: Shortest silence counted as a pause, in seconds (de Jong & Wempe: 0.3).
        silence_db: Silence is this many dB below the recording's 0.99 intensity quantile.
        nucleus_dip_db: A syllable nucleus must stand this many dB above the dip before the next.
        pitch_floor: Lowest pitch searched in the first pass, Hz.
        pitch_ceiling: Highest pitch searched in the first pass, Hz.
        voicing_threshold: A frame is voiced when its YIN aperiodicity is below this.
        voice_break: Unvoiced stretches inside speech longer than this (s) are voice breaks.
    """

    min_pause: float = 0.3
    silence_db: float = 25.0
    nucleus_dip_db: float = 2.0
    pitch_floor: float = 50.0
    pitch_ceiling: float = 450.0
    voicing_threshold: float = 0.25
    voice_break: float = 0.1


@dataclass(frozen=True)
class Pause:
    """A silence between stretches of speech, in seconds from the start of the signal."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class DeliveryMetrics:
    """How a stretch of speech was delivered.

    Attributes:
        duration: Total length, seconds.
        speaking_time: Seconds of speech (duration minus pauses and leading/trailing silence).
        speaking_ratio: speaking_time / duration.
        pauses: Silences of at least ``min_pause`` between speech.
        pause_count: len(pauses).
        mean_pause: Mean pause length, s (0 when there is none).
        longest_pause: Longest pause, s (0 when there is none).
        syllables: Syllable-like nuclei counted.
        speech_rate: Nuclei per second, pauses included.
        articulation_rate: Nuclei per second of speaking time.
        pitch_median: Median F0 of voiced frames, Hz (None when nothing is voiced).
        pitch_sd_semitones: SD of F0 in semitones around the speaker's median (None likewise).
        pitch_range_semitones: 5th to 95th percentile of F0, semitones (None likewise).
        loudness_db: Mean intensity of speech frames, dB relative to full scale (None: no speech).
        loudness_sd_db: SD of that intensity, dB.
        voiced_ratio: Share of speech frames that are voiced.
        voice_breaks: Unvoiced stretches inside speech longer than ``voice_break``.
    """

    duration: float
    speaking_time: float
    speaking_ratio: float
    pauses: tuple[Pause, ...]
    pause_count: int
    mean_pause: float
    longest_pause: float
    syllables: int
    speech_rate: float
    articulation_rate: float
    pitch_median: float | None
    pitch_sd_semitones: float | None
    pitch_range_semitones: float | None
    loudness_db: float | None
    loudness_sd_db: float
    voiced_ratio: float
    voice_breaks: int


@dataclass(frozen=True)
class Contours:
    """Frame-level measurements every 10 ms, shared by the metrics."""

    intensity_db: np.ndarray  # dBFS per frame
    speech: np.ndarray  # bool per frame: not silence
    f0: np.ndarray  # Hz per frame, 0 where unvoiced
    hop_seconds: float = _HOP / _RATE


def _frames(signal: np.ndarray, frame: int = _FRAME, hop: int = _HOP) -> np.ndarray:
    padded = np.pad(signal, (frame // 2, frame // 2))
    count = 1 + (len(padded) - frame) // hop
    return np.lib.stride_tricks.as_strided(
        padded, shape=(count, frame), strides=(padded.strides[0] * hop, padded.strides[0]), writeable=False
    )


def _intensity_db(frames: np.ndarray) -> np.ndarray:
    window = np.hanning(frames.shape[1]).astype(np.float32)
    power = np.mean(np.square(frames * window), axis=1) / np.mean(window**2)
    return 10 * np.log10(power + 1e-12).astype(np.float32)


def _yin(frames: np.ndarray, floor: float, ceiling: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame F0 (Hz) and aperiodicity (YIN's cumulative-mean-normalised difference minimum)."""
    n = frames.shape[1]
    max_lag = min(int(_RATE / floor), n - 1)
    min_lag = max(2, int(_RATE / ceiling))
    x = frames - frames.mean(axis=1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(x, size, axis=1)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size, axis=1)[:, : max_lag + 1]
    energy = np.cumsum(np.square(x), axis=1)
    total = energy[:, -1:]
    # Difference function d(tau) = E[0, n-tau) + E[tau, n) - 2 r(tau) over the overlapping part.
    e_head = np.concatenate([total, energy[:, n - 1 - np.arange(1, max_lag + 1)]], axis=1)
    e_tail = total - np.concatenate([np.zeros((len(x), 1)), energy[:, np.arange(0, max_lag)]], axis=1)
    diff = np.maximum(e_head + e_tail - 2 * acf, 0)
    cumulative = np.cumsum(diff[:, 1:], axis=1) / np.arange(1, max_lag + 1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] / np.maximum(cumulative, 1e-12)
    search = cmnd[:, min_lag:]
    # YIN: the first dip below the threshold, else the global minimum.
    below = search < 0.1
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    # Walk to the bottom of that dip.
    idx = first.copy()
    rows = np.arange(len(search))
    for _ in range(max_lag):
        nxt = np.minimum(idx + 1, search.shape[1] - 1)
        better = search[rows, nxt] < search[rows, idx]
        if not better.any():
            break
        idx = np.where(better, nxt, idx)
    lag = idx + min_lag
    aperiodicity = search[rows, idx]
    # Parabolic interpolation around the minimum for sub-sample lag.
    prev = cmnd[rows, np.maximum(lag - 1, 0)]
    nxt = cmnd[rows, np.minimum(lag + 1, max_lag)]
    denom = prev - 2 * cmnd[rows, lag] + nxt
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (prev - nxt) / np.where(denom == 0, 1, denom), 0.0)
    f0 = _RATE / (lag + np.clip(shift, -1, 1))
    return f0.astype(np.float32), aperiodicity.astype(np.float32)


def _chunked_yin(frames: np.ndarray, rows: np.ndarray, floor: float, ceiling: float) -> tuple[np.ndarray, np.ndarray]:
    """YIN on ``frames[rows]``, a block at a time so that memory stays flat for hour-long audio."""
    f0 = np.zeros(len(rows), np.float32)
    aperiodicity = np.ones(len(rows), np.float32)
    for start in range(0, len(rows), _CHUNK_FRAMES):
        block = rows[start : start + _CHUNK_FRAMES]
        f0[start : start + len(block)], aperiodicity[start : start + len(block)] = _yin(frames[block], floor, ceiling)
    return f0, aperiodicity


def contours(signal: np.ndarray, sampling_rate: int = SAMPLING_RATE, options: ProsodyOptions | None = None) -> Contours:
    """Intensity, speech/silence and F0 every 10 ms."""
    options = options or ProsodyOptions()
    x = np.asarray(signal, dtype=np.float32)
    if sampling_rate != _RATE:
        x = soxr.resample(x, sampling_rate, _RATE, quality="MQ").astype(np.float32, copy=False)
    frames = _frames(x)  # a strided view: no copy
    loudness_frames = _frames(x, _LOUDNESS_FRAME)
    intensity = np.concatenate(
        [_intensity_db(loudness_frames[i : i + _CHUNK_FRAMES]) for i in range(0, len(loudness_frames), _CHUNK_FRAMES)]
    )
    threshold = max(float(np.quantile(intensity, 0.99)) - options.silence_db, -70.0)
    speech = intensity > threshold

    f0 = np.zeros(len(frames), np.float32)
    candidates = np.flatnonzero(speech)
    if candidates.size:
        first, aper = _chunked_yin(frames, candidates, options.pitch_floor, options.pitch_ceiling)
        voiced = aper < options.voicing_threshold
        if voiced.sum() >= 5:
            q1, q3 = np.quantile(first[voiced], [0.25, 0.75])
            floor = max(options.pitch_floor, 0.75 * q1)
            ceiling = min(options.pitch_ceiling * 2, 1.5 * q3)
            second, aper = _chunked_yin(frames, candidates, floor, ceiling)
            voiced = (aper < options.voicing_threshold) & (second >= floor * 0.95) & (second <= ceiling * 1.05)
            f0[candidates[voiced]] = second[voiced]
        else:
            f0[candidates[voiced]] = first[voiced]
    return Contours(intensity_db=intensity, speech=speech, f0=f0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _nuclei(intensity: np.ndarray, speech: np.ndarray, voiced: np.ndarray, dip_db: float) -> int:
    """Syllable-like nuclei: voiced intensity peaks in speech, each followed by a dip of ``dip_db``."""
    smooth = np.convolve(intensity, np.ones(3) / 3, mode="same")
    peaks = np.flatnonzero((smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:])) + 1
    peaks = peaks[speech[peaks]]
    if peaks.size == 0:
        return 0
    # Keep a peak when the dip between it and the next kept candidate exceeds dip_db; among
    # peaks not separated by such a dip, keep the highest (de Jong & Wempe's merging).
    kept: list[int] = []
    for peak in peaks:
        if kept:
            last = kept[-1]
            dip = smooth[last : peak + 1].min()
            if min(smooth[last], smooth[peak]) - dip < dip_db:
                if smooth[peak] > smooth[last]:
                    kept[-1] = peak
                continue
        kept.append(peak)
    near_voiced = np.convolve(voiced.astype(np.int8), np.ones(5, np.int8), mode="same") > 0
    return int(sum(1 for p in kept if near_voiced[p]))


def measure(
    signal: np.ndarray, sampling_rate: int = SAMPLING_RATE, options: ProsodyOptions | None = None
) -> DeliveryMetrics:
    """Measure the delivery of one stretch of speech (a clip, an answer or a whole interview)."""
    options = options or ProsodyOptions()
    c = contours(signal, sampling_rate, options)
    hop = c.hop_seconds
    duration = len(signal) / sampling_rate
    speech = c.speech.copy()
    min_gap = int(round(options.min_pause / hop))
    # Silences shorter than a pause are part of speech (stop closures, short breaths).
    runs = _runs(~speech)
    pauses = []
    for start, end in runs:
        inner = start > 0 and end < len(speech)
        if end - start < min_gap:
            if inner:
                speech[start:end] = True
        elif inner:
            pauses.append(Pause(start * hop, min(end * hop, duration)))
    speaking_time = float(speech.sum() * hop) if speech.any() else 0.0
    speaking_time = min(speaking_time, duration)
    voiced = c.f0 > 0
    syllables = _nuclei(c.intensity_db, speech, voiced, options.nucleus_dip_db)
    pitches = c.f0[voiced & speech]
    if pitches.size >= 3:
        median = float(np.median(pitches))
        semitones = 12 * np.log2(pitches / median)
        pitch_sd = float(np.std(semitones))
        low, high = np.quantile(semitones, [0.05, 0.95])
        pitch_range: float | None = float(high - low)
        pitch_median: float | None = median
    else:
        pitch_median = pitch_sd = pitch_range = None  # type: ignore[assignment]
    loud = c.intensity_db[speech]
    breaks = 0
    if speech.any():
        for start, end in _runs(speech):
            inside = voiced[start:end]
            for u_start, u_end in _runs(~inside):
                if u_start > 0 and u_end < len(inside) and (u_end - u_start) * hop > options.voice_break:
                    breaks += 1
    return DeliveryMetrics(
        duration=duration,
        speaking_time=speaking_time,
        speaking_ratio=speaking_time / duration if duration > 0 else 0.0,
        pauses=tuple(pauses),
        pause_count=len(pauses),
        mean_pause=float(np.mean([p.duration for p in pauses])) if pauses else 0.0,
        longest_pause=max((p.duration for p in pauses), default=0.0),
        syllables=syllables,
        speech_rate=syllables / duration if duration > 0 else 0.0,
        articulation_rate=syllables / speaking_time if speaking_time > 0 else 0.0,
        pitch_median=pitch_median,
        pitch_sd_semitones=pitch_sd,
        pitch_range_semitones=pitch_range,
        loudness_db=float(loud.mean()) if loud.size else None,
        loudness_sd_db=float(loud.std()) if loud.size else 0.0,
        voiced_ratio=float(voiced[speech].mean()) if speech.any() else 0.0,
        voice_breaks=breaks,
    )
