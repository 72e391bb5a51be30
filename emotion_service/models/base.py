"""The one small interface every emotion model implements.

Every backend is a callable on ``(signal, sampling_rate)`` that returns a :class:`ModelOutput`,
so the ensemble never cares which model it calls.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..config import SAMPLING_RATE


def require_sampling_rate(sampling_rate: int, model: str) -> None:
    """Refuse signals that are not at :data:`SAMPLING_RATE`, saying how to fix it.

    Raises:
        ValueError: ``sampling_rate`` is not 16000.
    """
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(
            f"{model} needs {SAMPLING_RATE} Hz audio, got {sampling_rate} Hz: "
            "resample first (emotion_service.audio decodes to 16 kHz)."
        )


@dataclass(frozen=True)
class ModelOutput:
    """What one model says about one clip.

    Attributes:
        probabilities: Canonical label -> probability, over the labels this model can tell
            apart (they sum to 1). Labels the model does not know are absent, not zero.
        arousal: 0 (low) .. 1 (high), where the model estimates it directly; else None.
        valence: 0 (negative) .. 1 (positive), where the model estimates it directly; else None.
    """

    probabilities: dict[str, float]
    arousal: float | None = None
    valence: float | None = None

    @property
    def top_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.top_label]


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded model that /health and the README show."""

    name: str  # registry key, e.g. "wav2vec2_xlsr"
    display_name: str  # e.g. "Wav2Vec2-XLSR", as in the spec's "best_model"
    source: str  # hub id or local directory
    version: str  # revision, commit or model-file version
    licence: str
    labels: tuple[str, ...]  # canonical labels it can output
    device: str = "cpu"
    commercial_use: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        """The arithmetic its weights run in (``extra["dtype"]``; fp32 when a backend does not say)."""
        return self.extra.get("dtype", "fp32")


@dataclass
class BaselineStats:
    """A speaker's running statistics: how many clips, and sums of their standardised features.

    Only these numbers are kept for a candidate, never audio. Either ``total`` is the plain sum
    ``(states, width)`` and ``mass`` is None, or ``total`` holds one sum per label, each clip
    weighted by the model's probability of that label, ``(labels, ...)`` (the encoder model keeps
    them projected, ``(labels, members * hidden)``), and ``mass`` those probabilities' sums ``(labels,)``
    (see ``balanced_baseline`` in ``models/encoder.py``). ``source`` names the head that formed
    them (its version): another head's statistics mean something else, even with the same shape.
    """

    clips: int
    total: np.ndarray
    mass: np.ndarray | None = None
    source: str = ""

    def __add__(self, other: BaselineStats) -> BaselineStats:
        mass = None if self.mass is None or other.mass is None else self.mass + other.mass
        return BaselineStats(self.clips + other.clips, self.total + other.total, mass, self.source)

    def fits(self, other: BaselineStats) -> bool:
        """Whether ``other`` comes from the same head, of the same kind and shape (a model whose head
        changed starts afresh)."""
        return (
            self.source == other.source
            and self.total.shape == other.total.shape
            and (self.mass is None) == (other.mass is None)
        )

    @classmethod
    def of(cls, features: np.ndarray, source: str = "") -> BaselineStats:
        """The plain statistics of ``(clips, states, width)`` standardised features."""
        return cls(int(features.shape[0]), features.sum(axis=0).astype(np.float32), source=source)


@runtime_checkable
class SpeakerAdaptive(Protocol):
    """A model that can judge clips against a speaker's baseline (the encoder model).

    ``standardised`` gives the features whose running statistics (``baseline_stats``) form a
    baseline; ``score`` judges features alone (``baseline=None``) or against a baseline of at
    least ``min_baseline`` clips.
    """

    min_baseline: int

    def standardised(self, signals: Sequence[np.ndarray]) -> np.ndarray: ...

    def baseline_stats(self, features: np.ndarray) -> BaselineStats: ...

    def score(self, features: np.ndarray, baseline: BaselineStats | None = None) -> list[ModelOutput]: ...


class EmotionModel(abc.ABC):
    """An emotion model: 16 kHz mono float32 signals in, canonical scores out.

    Subclasses implement :meth:`process_signals`. Inputs are trusted: the HTTP layer has already
    decoded, resampled and validated them.
    """

    info: ModelInfo

    def __call__(self, signal: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> ModelOutput:
        """Score one clip."""
        return self.process_signals([signal], sampling_rate)[0]

    @abc.abstractmethod
    def process_signals(
        self,
        signals: Sequence[np.ndarray],
        sampling_rate: int = SAMPLING_RATE,
        *,
        same_speaker: bool = False,
    ) -> list[ModelOutput]:
        """Score several clips.

        Args:
            signals: 1-D float32 arrays at ``sampling_rate``.
            sampling_rate: Must be 16000 for every model here.
            same_speaker: True when all clips come from one speaker (an interview session); a
                model may then normalise per speaker. Models that cannot use it ignore it.
        """
