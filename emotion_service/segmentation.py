"""Split a long recording into stretches of speech that the emotion models can take.

Voice activity comes from the same level-relative intensity contour as the delivery metrics
(:mod:`.prosody`): speech is what lies within ``silence_db`` of the recording's loudest
moments, so the split follows each microphone's own level. Gaps shorter than ``min_silence`` stay
inside a segment, bursts shorter than ``min_speech`` (clicks, coughs) are dropped, and speech
longer than ``max_segment`` is cut at its quietest moment before the limit, so that every model
sees clips of the length it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .models.base import SAMPLING_RATE
from .prosody import Contours, ProsodyOptions, contours


@dataclass(frozen=True)
class SegmentOptions:
    """How a recording is cut.

    Attributes:
        min_silence: Silences at least this long (s) separate segments.
        min_speech: Speech shorter than this (s) is dropped.
        max_segment: Longer speech (s) is cut at its quietest moment before this length.
        padding: Seconds of context kept on each side of a segment.
    """

    min_silence: float = 0.6
    min_speech: float = 0.3
    max_segment: float = 20.0
    padding: float = 0.1


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


def _cut(start: int, end: int, intensity: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Cut [start, end) into pieces of at most ``max_frames``, each at the quietest frame of its second half."""
    pieces = []
    while end - start > max_frames:
        window = intensity[start + max_frames // 2 : start + max_frames]
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
        options: Segment lengths and gaps.
        prosody: Settings of the intensity contour (its ``silence_db`` sets the speech threshold).
        precomputed: Contours already computed for this signal (saves the work twice).
    """
    options = options or SegmentOptions()
    c = precomputed or contours(signal, sampling_rate, prosody)
    hop = c.hop_seconds
    speech = c.speech.copy()
    for start, end in _runs(~speech):
        if start > 0 and end < len(speech) and (end - start) * hop < options.min_silence:
            speech[start:end] = True
    duration = len(signal) / sampling_rate
    pad = options.padding
    max_frames = max(1, int((options.max_segment - 2 * pad) / hop))
    segments = []
    for start, end in _runs(speech):
        if (end - start) * hop < options.min_speech:
            continue
        pieces = _cut(start, end, c.intensity_db, max_frames)
        for i, (a, b) in enumerate(pieces):
            # Padding only where speech begins and ends, not at cuts inside it: no overlaps.
            begin = a * hop - (pad if i == 0 else 0.0)
            finish = b * hop + (pad if i == len(pieces) - 1 else 0.0)
            segments.append(SpeechSegment(float(max(0.0, begin)), float(min(duration, finish))))
    return segments
