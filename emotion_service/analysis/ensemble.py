"""Weighted probability averaging of several models in the canonical label space.

For each canonical label, only the models that can output it vote on it: a 4-class model that
has no "calm" does not pull "calm" towards zero. Each label's score is the weighted mean of the
probabilities of the models that know it; the scores are then renormalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..labels import CANONICAL_LABELS
from ..models.base import ModelOutput


@dataclass(frozen=True)
class ModelResult:
    """One model's output for one clip, with its name and timing."""

    name: str
    display_name: str
    output: ModelOutput
    inference_time: float


@dataclass(frozen=True)
class EnsembleResult:
    """The combined verdict of the models (the spec's ``final_result``).

    Attributes:
        probabilities: All canonical labels -> probability (sum to 1).
        label: The recommended canonical label.
        confidence: Its probability.
        best_model: Display name of the model that backs the verdict most strongly.
        average_confidence: Mean of the models' own top-label confidences.
        consensus: Every model that can output ``label`` chose it as its own top label.
        agreement: Share of the ensemble weight held by models whose top label is ``label``.
        arousal: Weighted mean over models that estimate it (0..1), else None.
        valence: Likewise (0 negative .. 1 positive).
    """

    probabilities: dict[str, float]
    label: str
    confidence: float
    best_model: str
    average_confidence: float
    consensus: bool
    agreement: float
    arousal: float | None
    valence: float | None


def _weighted_mean(pairs: Sequence[tuple[float, float | None]]) -> float | None:
    known = [(w, v) for w, v in pairs if v is not None]
    total = sum(w for w, _ in known)
    return sum(w * v for w, v in known) / total if total > 0 else None


def combine(results: Sequence[ModelResult], weights: Mapping[str, float]) -> EnsembleResult:
    """Combine per-model outputs for one clip.

    Args:
        results: At least one model result.
        weights: Model name -> weight (missing names weigh 1).
    """
    if not results:
        raise ValueError("combine() needs at least one model result")
    scores: dict[str, float] = {}
    for label in CANONICAL_LABELS:
        votes = [
            (weights.get(r.name, 1.0), r.output.probabilities[label])
            for r in results
            if label in r.output.probabilities
        ]
        mean = _weighted_mean(votes)
        if mean is not None:
            scores[label] = mean
    total = sum(scores.values())
    probabilities = {label: (scores.get(label, 0.0) / total if total > 0 else 0.0) for label in CANONICAL_LABELS}
    label = max(probabilities, key=probabilities.__getitem__)

    voters = [r for r in results if label in r.output.probabilities]
    agreeing = [r for r in voters if r.output.top_label == label]
    backer = max(agreeing or voters, key=lambda r: r.output.probabilities[label])
    total_weight = sum(weights.get(r.name, 1.0) for r in results)
    agreement = sum(weights.get(r.name, 1.0) for r in agreeing) / total_weight

    return EnsembleResult(
        probabilities=probabilities,
        label=label,
        confidence=probabilities[label],
        best_model=backer.display_name,
        average_confidence=sum(r.output.confidence for r in results) / len(results),
        consensus=len(agreeing) == len(voters),
        agreement=agreement,
        arousal=_weighted_mean([(weights.get(r.name, 1.0), r.output.arousal) for r in results]),
        valence=_weighted_mean([(weights.get(r.name, 1.0), r.output.valence) for r in results]),
    )
