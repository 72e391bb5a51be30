"""What every trainer shares: manifests of labelled clips, augmentation, calibration and metrics.

Used by the bundled CNN's trainer (:mod:`emotion_service.train`) and the encoder heads'
(:mod:`.encoder`). Everything is seeded.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from scipy import signal as scipy_signal
from torch import nn

from ..config import SAMPLING_RATE
from ..labels import CANONICAL_LABELS, canonical_label

logger = logging.getLogger("emotion_service.train")


@dataclass(frozen=True)
class Clip:
    path: Path
    speaker: str
    label: str


def read_manifest(manifest: str | os.PathLike[str]) -> list[Clip]:
    """Clips of a manifest CSV with canonical labels; rows with unknown emotions are skipped.

    Raises:
        ValueError: The manifest lacks a column or has no usable row.
    """
    manifest = Path(manifest)
    root = manifest.resolve().parent
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "speaker", "emotion"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{manifest} lacks the column(s) {', '.join(sorted(missing))}; it needs path,speaker,emotion"
            )
        clips, skipped = [], 0
        for row in reader:
            label = canonical_label(row["emotion"])
            if label is None:
                skipped += 1
                continue
            clips.append(Clip(root / row["path"], row["speaker"].strip(), label))
    if skipped:
        logger.warning("%d rows of %s have emotions outside the canonical set and were skipped", skipped, manifest)
    if not clips:
        raise ValueError(f"{manifest} has no row with a known emotion ({', '.join(CANONICAL_LABELS)})")
    return clips


def read_audio(path: Path) -> np.ndarray:
    """A file as 16 kHz mono float32."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLING_RATE:
        audio = soxr.resample(audio, rate, SAMPLING_RATE).astype(np.float32)
    return audio


def select_speakers(clips: Sequence[Clip], spec: str) -> set[str]:
    """Speakers named in a comma list; "21" also matches "ravdess_21" (trailing number).

    Raises:
        ValueError: A name matches no speaker of the manifest.
    """
    speakers = sorted({c.speaker for c in clips})
    chosen: set[str] = set()
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        matches = [s for s in speakers if s == token or (token.isdigit() and _trailing_number(s) == int(token))]
        if not matches:
            raise ValueError(f"speaker {token!r} is not in the manifest (speakers: {', '.join(speakers)})")
        chosen.update(matches)
    return chosen


def _trailing_number(name: str) -> int | None:
    digits = ""
    for ch in reversed(name):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else None


# --------------------------------------------------------------------------------------------
# Augmentation: the conditions of real interviews that an acted studio corpus lacks.


def _coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size) + 1.0
    spectrum /= freqs ** rng.uniform(0.0, 1.0)  # white .. pink
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.std(noise) + 1e-9)


def _reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.1, 0.6)
    length = int(rt60 * SAMPLING_RATE)
    t = np.arange(length) / SAMPLING_RATE
    impulse = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    impulse[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct path, direct-to-reverberant ratio varies
    wet = scipy_signal.fftconvolve(x, impulse)[: x.size]
    return wet / (np.max(np.abs(wet)) + 1e-9) * np.max(np.abs(x))


AUGMENT_VERSION = 2  # bump when augment() changes, so cached features are recomputed


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly degraded copy of a 16 kHz clip: speed, room, microphone, band, noise, gain."""
    y = x.astype(np.float64)
    if rng.random() < 0.5:  # speed (tempo and pitch together), as in Kaldi speed perturbation
        factor = rng.uniform(0.9, 1.1)
        y = soxr.resample(y, SAMPLING_RATE * factor, SAMPLING_RATE)
    if rng.random() < 0.3:
        y = _reverb(y, rng)
    if rng.random() < 0.3:  # microphone colouring: a gentle high- or low-pass
        highpass = rng.random() < 0.5
        cutoff = rng.uniform(100, 300) if highpass else rng.uniform(3500, 7500)
        sos = scipy_signal.butter(
            1, cutoff, btype="highpass" if highpass else "lowpass", fs=SAMPLING_RATE, output="sos"
        )
        y = scipy_signal.sosfilt(sos, y)
    if rng.random() < 0.1:  # telephone / narrow-band codec
        y = soxr.resample(soxr.resample(y, SAMPLING_RATE, 8000), 8000, SAMPLING_RATE)
    if rng.random() < 0.4:
        snr_db = rng.uniform(10.0, 35.0)
        power = np.mean(y**2) + 1e-12
        y = y + _coloured_noise(y.size, rng) * np.sqrt(power / 10 ** (snr_db / 10))
    y *= 10 ** (rng.uniform(-12, 6) / 20)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Calibration and metrics


def cache_dir() -> Path:
    return Path(os.environ.get("EMOTION_SERVICE_CACHE", Path.home() / ".cache" / "emotion_service"))


def fit_temperature(
    logits: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    start: float = 1.0,
    shares: np.ndarray | None = None,
) -> float:
    """The temperature that minimises the negative log-likelihood (Guo et al., 2017).

    With ``groups`` (a corpus per row), each group's mean NLL weighs the same: a large corpus
    whose raters often disagreed does not set the confidence of a small, cleaner one. With
    ``shares`` (per row, 0-1), a row's temperature is ``start + (t - start) * share``: the fitted
    ``t`` is the temperature at share 1 (logits that mix in a share of a path, see ``ramped_temperature``).
    """
    z = torch.from_numpy(logits).double()
    if shares is not None:
        share = torch.from_numpy(np.asarray(shares, dtype=np.float64))[:, None]
        return _best_temperature(lambda t: z / (start + (t - start) * share), y, groups)
    return _best_temperature(lambda t: z / t, y, groups)


def _best_temperature(scaled: Callable[[float], torch.Tensor], y: np.ndarray, groups: np.ndarray | None) -> float:
    """Of a log grid of temperatures ``t``, the one whose ``scaled(t)`` logits have the least NLL."""
    target = torch.from_numpy(y)
    weight = torch.ones(len(y), dtype=torch.float64)
    if groups is not None:
        _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        weight = torch.from_numpy(1.0 / counts[inverse])
    weight = weight / weight.sum()
    candidates = np.exp(np.linspace(np.log(0.3), np.log(5.0), 300))
    losses = [
        float((nn.functional.cross_entropy(scaled(t), target, reduction="none") * weight).sum()) for t in candidates
    ]
    return float(candidates[int(np.argmin(losses))])


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy over ``n_bins`` equal bins, weighted by their clips."""
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    return float(
        sum(
            abs(correct[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b)
            for b in range(n_bins)
            if np.any(bins == b)
        )
    )


def metrics(probabilities: np.ndarray, y: np.ndarray, labels: Sequence[str], n_bins: int = 10) -> dict[str, Any]:
    """UA (mean per-class recall over the classes present), WA, ECE, per-class recall, confusion."""
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (y, predicted), 1)
    present = confusion.sum(axis=1) > 0
    recall = {labels[i]: float(confusion[i, i] / confusion[i].sum()) for i in range(len(labels)) if present[i]}
    correct = predicted == y
    ece = calibration_error(probabilities.max(axis=1), correct, n_bins)
    return {
        "ua": float(np.mean(list(recall.values()))),
        "wa": float(correct.mean()),
        "ece": float(ece),
        "nll": float(-np.mean(np.log(probabilities[np.arange(len(y)), y] + 1e-12))),
        "per_class_recall": recall,
        "confusion": confusion.tolist(),
        "labels": list(labels),
        "clips": int(len(y)),
    }


def split_validation(speakers: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    shuffled = list(rng.permutation(sorted(speakers)))
    return [sorted(str(s) for s in shuffled[k::folds]) for k in range(folds)]
