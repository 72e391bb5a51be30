"""Split a long recording into stretches of speech that the emotion models can take.

Two voice activity detectors (``SegmentOptions.vad``, the ``VAD`` setting) decide what is speech:

- ``energy``: the same level-relative intensity contour as the delivery metrics (:mod:`.prosody`):
  speech is what lies within ``silence_db`` of the recording's loudest moments, so the split
  follows each microphone's own level; every 10 ms.
- ``silero``: the Silero VAD network (:mod:`.vad`), which tells speech from noise, music and hum
  at any level; every 32 ms.

The same rules then apply to both: gaps shorter than ``min_silence`` stay inside a segment, bursts
shorter than ``min_speech`` (clicks, coughs) are dropped, and speech longer than ``max_segment`` is
cut at its least speech-like moment before the limit (quietest for ``energy``, least probable for
``silero``), so that every model sees clips of the length it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from ..config import SAMPLING_RATE
from .prosody import Contours, ProsodyOptions, contours

VADS = ("energy", "silero")


@dataclass(frozen=True)
class SegmentOptions:
    """How a recording is cut.

    Attributes:
        min_silence: Silences at least this long (s) separate segments.
        min_speech: Speech shorter than this (s) is dropped.
        max_segment: Longer speech (s) is cut at its least speech-like moment before this length.
        padding: Seconds of context kept on each side of a segment.
        vad: What decides speech: ``energy`` (level-relative intensity) or ``silero`` (network).
    """

    min_silence: float = 0.6
    min_speech: float = 0.3
    max_segment: float = 20.0
    padding: float = 0.1
    vad: str = "silero"

    def __post_init__(self) -> None:
        if self.vad not in VADS:
            raise ValueError(f"vad must be one of {', '.join(VADS)}, not {self.vad!r}")


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech, in seconds from the start of the recording."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def slice(self, signal: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
        return signal[int(round(self.start * sampling_rate)) : int(round(self.end * sampling_rate))]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _cut(start: int, end: int, score: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Cut [start, end) into pieces of at most ``max_frames``, each at the lowest score of its second half."""
    pieces = []
    while end - start > max_frames:
        window = score[start + max_frames // 2 : start + max_frames]
        cut = start + max_frames // 2 + int(np.argmin(window))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def find_speech(
    signal: np.ndarray,
    sampling_rate: int = SAMPLING_RATE,
    options: SegmentOptions | None = None,
    *,
    prosody: ProsodyOptions | None = None,
    precomputed: Contours | None = None,
) -> list[SpeechSegment]:
    """Return the speech segments of a recording, in order.

    Args:
        signal: Mono samples.
        sampling_rate: Their rate.
        options: Segment lengths and gaps, and the VAD.
        prosody: Settings of the intensity contour (its ``silence_db`` sets the speech threshold;
            ``energy`` only).
        precomputed: Contours already computed for this signal (saves the work twice; ``energy`` only).
    """
    options = options or SegmentOptions()
    duration = len(signal) / sampling_rate
    if options.vad == "silero":
        from .vad import FRAME_SECONDS, RATE, speech_frames, speech_probabilities

        x = np.asarray(signal, dtype=np.float32)
        if sampling_rate != RATE:
            x = soxr.resample(x, sampling_rate, RATE, quality="MQ").astype(np.float32, copy=False)
        probabilities = speech_probabilities(x)
        return _segments(speech_frames(probabilities), probabilities, FRAME_SECONDS, duration, options)
    c = precomputed or contours(signal, sampling_rate, prosody)
    return _segments(c.speech, c.intensity_db, c.hop_seconds, duration, options)


def _segments(
    speech: np.ndarray, score: np.ndarray, hop: float, duration: float, options: SegmentOptions
) -> list[SpeechSegment]:
    """Segments from per-frame speech decisions; ``score`` is where a long stretch is best cut (lowest)."""
    speech = speech.copy()
    for start, end in _runs(~speech):
        if start > 0 and end < len(speech) and (end - start) * hop < options.min_silence:
            speech[start:end] = True
    pad = options.padding
    max_frames = max(1, int((options.max_segment - 2 * pad) / hop))
    segments = []
    for start, end in _runs(speech):
        if (end - start) * hop < options.min_speech:
            continue
        pieces = _cut(start, end, score, max_frames)
        for i, (a, b) in enumerate(pieces):
            # Padding only where speech begins and ends, not at cuts inside it: no overlaps.
            begin = a * hop - (pad if i == 0 else 0.0)
            finish = b * hop + (pad if i == len(pieces) - 1 else 0.0)
            segments.append(SpeechSegment(float(max(0.0, begin)), float(min(duration, finish))))
    return segments


def speech_only(
    signal: np.ndarray, options: SegmentOptions | None = None, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """The clip with its leading, trailing and long inner silences cut (pauses over ``min_silence``).

    What is left is the speech segments, each with its ``padding``, end to end: the models see
    less audio and no silence. A clip in which nothing is found as speech is returned whole.
    """
    segments = find_speech(signal, sampling_rate, options or SegmentOptions(vad="energy"))
    if not segments:
        return signal
    pieces = [signal[int(s.start * sampling_rate) : int(s.end * sampling_rate)] for s in segments]
    return np.concatenate(pieces) if pieces else signal
