"""Train the encoder heads: Whisper's frozen encoder, pooled statistics, a small trained head.

The encoder never trains, so what it says about a clip is computed once and cached per clip and
per augmented copy (:func:`extract`): a full training run then spends its time on the heads. The
feature of a clip is ``(states, 2 * d_model)``: the mean and standard deviation over the clip's
real frames of each hidden state (:meth:`WhisperEncoder.pooled`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import shlex
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio.segmentation import SegmentOptions, speech_only
from ..labels import CANONICAL_LABELS, COVERED_BY
from ..models.encoder import EmotionHead, HeadEnsemble, ramped_temperature, ramped_weight, speaker_baselines
from ..models.whisper_encoder import WhisperEncoder
from .common import (
    AUGMENT_VERSION,
    Clip,
    augment,
    cache_dir,
    calibration_error,
    metrics,
    read_audio,
    read_manifest,
    softmax,
)

logger = logging.getLogger("emotion_service.train")

_encoder: WhisperEncoder | None = None


def encoder_tag(directory: Path) -> str:
    """A short id of the encoder's weights: cached features of other weights are never mixed in."""
    digest = hashlib.sha256()
    with (Path(directory) / "model.safetensors").open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


SPEECH = -1  # the version that is the clean clip with its silences cut (what MODEL_INPUT=speech feeds)


def _feature_file(root: Path, clip: Clip, version: int, seed: int) -> Path:
    """Where the feature of ``clip``'s ``version`` lives (0: the clean clip, k: the k-th degraded
    copy, :data:`SPEECH`: the clean clip, speech only)."""
    stat = clip.path.stat()
    name = f"{clip.path.resolve()}|{stat.st_size}|{version}|{seed if version > 0 else 0}|{AUGMENT_VERSION}"
    key = hashlib.sha256(name.encode()).hexdigest()[:24]
    return root / key[:2] / f"{key}.npy"


def _version_audio(clip: Clip, version: int, seed: int) -> np.ndarray:
    audio = read_audio(clip.path)
    if version == SPEECH:
        # The serving path's own cut (MODEL_INPUT=speech): leading, trailing and long inner
        # silences removed by the energy VAD, so that a head does not learn a corpus's silences.
        return speech_only(audio, SegmentOptions(vad="energy"))
    if version == 0:
        return audio
    # One generator per clip and copy: a copy does not depend on the order or subset of clips.
    clip_hash = int(hashlib.sha256(clip.path.name.encode()).hexdigest()[:8], 16)
    return augment(audio, np.random.default_rng([seed, clip_hash, version]))


def _init_worker(directory: str, threads: int) -> None:
    global _encoder
    torch.set_num_threads(threads)
    _encoder = WhisperEncoder.load(directory)


def _extract_one(task: tuple[Clip, int, int, str]) -> str:
    clip, version, seed, target = task
    assert _encoder is not None
    audio = _version_audio(clip, version, seed)
    with torch.inference_mode():
        feature = _encoder.pooled([audio])[0].numpy().astype(np.float16)
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, feature)
    tmp.replace(path)
    return target


def extract(
    clips: Sequence[Clip],
    versions: Sequence[Sequence[int]],
    encoder_dir: Path,
    *,
    seed: int = 0,
    workers: int = 2,
) -> list[list[np.ndarray]]:
    """The pooled encoder features of each clip's requested versions, computed once and cached.

    Args:
        clips: The clips.
        versions: For each clip, which versions (0 clean, k >= 1 the k-th degraded copy,
            :data:`SPEECH` the clean clip with its silences cut).
        encoder_dir: The encoder's folder (``config.json``, ``model.safetensors``).
        seed: Seed of the augmentations.
        workers: Processes (one torch thread each).

    Returns:
        For each clip, its versions' features ``(states, 2 * d_model)`` float16, in the order asked.
    """
    root = cache_dir() / "whisper-features" / encoder_tag(encoder_dir)
    files = [[_feature_file(root, clip, v, seed) for v in vs] for clip, vs in zip(clips, versions, strict=True)]
    todo = [
        (clip, v, seed, str(f))
        for clip, vs, fs in zip(clips, versions, files, strict=True)
        for v, f in zip(vs, fs, strict=True)
        if not f.is_file()
    ]
    if todo:
        started = time.perf_counter()
        logger.info("encoding %d clip versions (%d cached)", len(todo), sum(map(len, files)) - len(todo))
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(encoder_dir), 1)) as pool:
            for done, _ in enumerate(pool.map(_extract_one, todo, chunksize=8), 1):
                if done % 500 == 0:
                    rate = done / (time.perf_counter() - started)
                    logger.info("encoded %d/%d (%.1f per s)", done, len(todo), rate)
        logger.info("encoded %d clip versions in %.0f s", len(todo), time.perf_counter() - started)
    return [[np.load(f) for f in fs] for fs in files]


# --------------------------------------------------------------------------------------------
# The data: several corpora, each with its own label set


@dataclass(frozen=True)
class Corpus:
    """A manifest's clips and the canonical labels it uses (its label set)."""

    name: str
    clips: list[Clip]
    labels: tuple[str, ...]


def read_corpora(manifests: Sequence[str | Path]) -> list[Corpus]:
    """Each manifest as a corpus; its label set is the canonical labels its rows use."""
    corpora = []
    for manifest in manifests:
        clips = read_manifest(manifest)
        present = {c.label for c in clips}
        corpora.append(
            Corpus(
                Path(manifest).resolve().parent.name,
                clips,
                tuple(label for label in CANONICAL_LABELS if label in present),
            )
        )
    return corpora


@dataclass
class Dataset:
    """Every clip of every corpus, with its features of every version, as arrays.

    ``features`` is ``(clips, versions, states, width)`` float16 (version 0 clean; with ``speech``,
    the last version is the clean clip with its silences cut); ``mask`` is ``(clips, labels)``:
    True for the labels of the clip's corpus, over which it is scored (its loss sees every label:
    :func:`allowed_labels`).
    """

    clips: list[Clip]
    corpus: np.ndarray
    y: np.ndarray
    speaker: np.ndarray
    features: np.ndarray
    mask: np.ndarray
    labels: tuple[str, ...]
    corpora: list[Corpus]
    speech: bool = False

    def subset(self, rows: np.ndarray) -> Dataset:
        return Dataset(
            [self.clips[i] for i in rows],
            self.corpus[rows],
            self.y[rows],
            self.speaker[rows],
            self.features[rows],
            self.mask[rows],
            self.labels,
            self.corpora,
            self.speech,
        )


def build_dataset(
    corpora: Sequence[Corpus], features: Sequence[Sequence[np.ndarray]], labels: Sequence[str], speech: bool = False
) -> Dataset:
    clips = [clip for corpus in corpora for clip in corpus.clips]
    corpus_of = np.array([k for k, corpus in enumerate(corpora) for _ in corpus.clips])
    index = {label: i for i, label in enumerate(labels)}
    masks = np.array([[label in corpus.labels for label in labels] for corpus in corpora])
    speakers = sorted({c.speaker for c in clips})
    return Dataset(
        clips=clips,
        corpus=corpus_of,
        y=np.array([index[c.label] for c in clips]),
        speaker=np.array([speakers.index(c.speaker) for c in clips]),
        features=np.stack([np.stack(f) for f in features]),
        mask=masks[corpus_of],
        labels=tuple(labels),
        corpora=list(corpora),
        speech=speech,
    )


# --------------------------------------------------------------------------------------------
# Training a head


BASELINE_SIZES = ("uniform", "log")  # how the sizes of the training baselines are drawn (HeadConfig.baseline_sizes)


@dataclass(frozen=True)
class HeadConfig:
    """The head's recipe. Chosen on speaker-independent inner folds of the training speakers."""

    depth: int = 6
    hidden: int = 256
    dropout: float = 0.3
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05
    clean_share: float = 0.5
    speech_share: float = 0.25
    shrink: float = 2.0
    # "labels": the baseline is the mean of the centroids of the emotions the clip path hears in
    # the speaker's clips, each weighing the same (balanced_baseline); "mean": their plain mean.
    baseline: str = "labels"
    # "alone": the baseline path learns to classify by itself (then its logits are added to the
    # clip path's, scaled by the chosen weight); "residual": it learns a correction to the clip path.
    relative_loss: str = "alone"
    # "difference": the baseline path reads only how the clip differs from the baseline (what the
    # speaker's own voice does not explain); "both": the clip too (the 1.1 and 1.2 heads).
    reads: str = "difference"
    min_baseline: int = 3
    max_baseline: int = 16
    # How many clips a training baseline holds, from 1 to max_baseline: "uniform", or "log" (log-uniform:
    # as many baselines of 2-4 clips as of 16-32, so that a long session does not crowd out young ones).
    baseline_sizes: str = "uniform"
    skewed_share: float = 0.5
    dominant_share: float = 0.7
    # Heads trained alike, member k from seed + k, their logits averaged (HeadEnsemble).
    members: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.baseline_sizes not in BASELINE_SIZES:
            raise ValueError(f"baseline_sizes must be one of {BASELINE_SIZES}, got {self.baseline_sizes!r}")


def standardisation(features: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per state and dimension of the clean training features."""
    clean = features[:, 0, : depth + 1].astype(np.float32)
    return clean.mean(axis=0), clean.std(axis=0) + 1e-4


def allowed_labels(data: Dataset) -> np.ndarray:
    """``(clips, labels)``: the labels each clip's label may mean. Its own, and the labels its corpus
    lacks that it files under that label (:data:`COVERED_BY`: a CREMA-D neutral clip may be calm).

    The loss runs over every label, so that a voice like a corpus's voices gets no free mass on the
    labels that corpus never shows (with them left out of its loss, the default head called 32 of 40
    held-out CREMA-D clips surprised), and its label's share goes to the set.
    """
    allowed = np.zeros(data.mask.shape, dtype=bool)
    allowed[np.arange(len(data.y)), data.y] = True
    for label, covered in COVERED_BY.items():
        if label not in data.labels:
            continue
        here = data.y == data.labels.index(label)
        for other in covered:
            if other in data.labels:
                column = data.labels.index(other)
                allowed[here, column] = ~data.mask[here, column]
    return allowed


def set_cross_entropy(logits: torch.Tensor, allowed: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per-row cross-entropy of a target that is any of the ``allowed`` labels, label-smoothed as
    :func:`torch.nn.functional.cross_entropy` is (one allowed label: the same loss)."""
    log_p = torch.log_softmax(logits, dim=-1)
    nll = -torch.logsumexp(log_p.masked_fill(~allowed, -torch.inf), dim=-1)
    return (1 - smoothing) * nll - smoothing * log_p.mean(dim=-1)


def sample_baselines(
    data: Dataset, rows: np.ndarray, config: HeadConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each clip, the members of a random baseline of its speaker's clips (itself included).

    Half the baselines are skewed: ``dominant_share`` of their clips show one emotion. Returns
    ``(members, valid)``: ``(rows, max_baseline)`` indices into ``data`` and which are used.
    """
    by_speaker: dict[int, np.ndarray] = {}
    for s in np.unique(data.speaker[rows]):
        by_speaker[int(s)] = np.flatnonzero(data.speaker == s)
    members = np.zeros((len(rows), config.max_baseline), dtype=np.int64)
    valid = np.zeros((len(rows), config.max_baseline), dtype=bool)
    for r, i in enumerate(rows):
        pool = by_speaker[int(data.speaker[i])]
        pool = pool[pool != i]
        top = min(config.max_baseline, len(pool) + 1)
        if config.baseline_sizes == "log":
            n = min(top, int(np.exp(rng.uniform(0.0, np.log(top + 1)))))
        else:
            n = int(rng.integers(1, top + 1))
        chosen = [i]
        if n > 1:
            if rng.random() < config.skewed_share:
                emotions = np.unique(data.y[pool])
                dominant = rng.choice(emotions)
                same, other = pool[data.y[pool] == dominant], pool[data.y[pool] != dominant]
                k = min(len(same), round(config.dominant_share * (n - 1)))
                picks = list(rng.choice(same, k, replace=False)) + list(
                    rng.choice(other, min(len(other), n - 1 - k), replace=False)
                )
            else:
                picks = list(rng.choice(pool, n - 1, replace=False))
            chosen += picks
        members[r, : len(chosen)] = chosen
        valid[r, : len(chosen)] = True
    return members, valid


def train_head(data: Dataset, rows: np.ndarray, config: HeadConfig) -> tuple[EmotionHead, np.ndarray, np.ndarray]:
    """Train a head on ``rows`` of ``data``; returns it with the standardisation it was trained with."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    states = config.depth + 1
    mean, std = standardisation(data.features[rows], config.depth)
    mean_t, std_t = torch.from_numpy(mean), torch.from_numpy(std)
    head = EmotionHead(states, mean.shape[-1], len(data.labels), config.hidden, config.dropout, config.reads)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(rows) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=steps)
    # Each corpus weighs the same, and within a corpus each of its emotions: the large corpus does
    # not drown the small one, nor a frequent emotion a rare one.
    sample_weight = np.zeros(len(data.y))
    for k in np.unique(data.corpus[rows]):
        mine = rows[data.corpus[rows] == k]
        classes, counts = np.unique(data.y[mine], return_counts=True)
        for c, n in zip(classes, counts, strict=True):
            sample_weight[mine[data.y[mine] == c]] = 1.0 / (n * len(classes))
    sample_weight = torch.from_numpy(sample_weight * len(rows) / sample_weight[rows].sum()).float()

    allowed = torch.from_numpy(allowed_labels(data))

    def loss_of(logits: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        at = torch.from_numpy(index)
        losses = set_cross_entropy(logits, allowed[at], config.label_smoothing)
        w = sample_weight[at]
        return (losses * w).sum() / w.sum()

    versions = data.features.shape[1]
    # Every version of every clip standardised once, as float32: batches are then plain gathers.
    table = torch.empty((data.features.shape[0], versions, states, mean.shape[-1]), dtype=torch.float32)
    for start in range(0, len(table), 512):
        chunk = torch.from_numpy(data.features[start : start + 512, :, :states].astype(np.float32))
        table[start : start + 512] = (chunk - mean_t) / std_t

    plain = versions - 1 if data.speech else versions  # clean and degraded copies; then speech only

    def version_of(n: int) -> np.ndarray:
        chosen = np.zeros(n, dtype=np.int64)
        if plain > 1:
            degraded = rng.integers(1, plain, n)
            chosen = np.where(rng.random(n) < config.clean_share, 0, degraded)
        if data.speech:
            chosen = np.where(rng.random(n) < config.speech_share, versions - 1, chosen)
        return chosen

    def standardised(index: np.ndarray, keep: np.ndarray | None = None) -> torch.Tensor:
        """The clips ``index`` points at, each in a random version; ``keep`` (same shape): only those,
        flat. A version is drawn for every entry, kept or not, so the draws do not depend on which are."""
        flat, chosen = index.ravel(), version_of(index.size)
        if keep is not None:
            return table[torch.from_numpy(flat[keep.ravel()]), torch.from_numpy(chosen[keep.ravel()])]
        return table[torch.from_numpy(flat), torch.from_numpy(chosen)].reshape(*index.shape, states, -1)

    head.train()
    for _ in range(config.epochs):
        order = rng.permutation(rows)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            x = standardised(batch)
            loss = loss_of(head(x), batch)
            members, valid = sample_baselines(data, batch, config, rng)
            used = valid.sum(axis=1) >= config.min_baseline
            if used.any():
                owner = torch.from_numpy(np.nonzero(valid[used])[0])
                head.eval()  # the probabilities the served head would give
                with torch.no_grad():
                    clips = standardised(members[used], valid[used])
                    baseline = speaker_baselines(head, clips, owner, int(used.sum()), config.baseline, config.shrink)
                head.train()
                if config.relative_loss == "residual":
                    logits = head(x[used], baseline)
                else:
                    # The states' weights are the clip path's to learn (with them shared, the
                    # default's clip path scored 0.5 points lower on RAVDESS's inner folds).
                    logits = head.relative_logits(x[used], baseline, detach=True)
                loss = loss + loss_of(logits, batch[used])
                if config.relative_loss == "combined":  # and the sum, as served, trains both paths
                    loss = loss + loss_of(head.clip(head.weighted(x[used])) + logits, batch[used])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return head.eval(), mean, std


def train_ensemble(data: Dataset, rows: np.ndarray, config: HeadConfig) -> tuple[HeadEnsemble, np.ndarray, np.ndarray]:
    """``config.members`` heads on ``rows``, member k trained from seed ``config.seed + k`` (member 0
    is :func:`train_head`'s head), as one :class:`HeadEnsemble`; with the standardisation they share."""
    heads = []
    for k in range(config.members):
        head, mean, std = train_head(data, rows, dataclasses.replace(config, seed=config.seed + k))
        heads.append(head)
    return HeadEnsemble(heads).eval(), mean, std


# --------------------------------------------------------------------------------------------
# Scoring: per clip, and against baselines of balanced and skewed sessions


def standardise(data: Dataset, rows: np.ndarray, mean: np.ndarray, std: np.ndarray, version: int = 0) -> np.ndarray:
    states = mean.shape[0]
    return (data.features[rows, version, :states].astype(np.float32) - mean) / std


def clip_logits(head: HeadEnsemble, z: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head(torch.from_numpy(z)).numpy()


def sessions(data: Dataset, rows: np.ndarray, kind: str, seed: int, size: int = 10, draws: int = 2) -> list[np.ndarray]:
    """Sessions of each speaker among ``rows`` (positions into ``rows``).

    ``balanced``: all the speaker's clips. ``skewed``: for each of the speaker's emotions,
    ``draws`` sessions of ``size`` clips of which 70% show that emotion. ``random``: as many
    sessions of ``size`` clips drawn at random.
    """
    rng = np.random.default_rng(seed)
    out = []
    for s in np.unique(data.speaker[rows]):
        mine = np.flatnonzero(data.speaker[rows] == s)
        if kind == "balanced":
            out.append(mine)
            continue
        for emotion in np.unique(data.y[rows][mine]):
            if kind == "random":
                out.extend(rng.choice(mine, min(size, len(mine)), replace=False) for _ in range(draws))
                continue
            same, other = mine[data.y[rows][mine] == emotion], mine[data.y[rows][mine] != emotion]
            k = min(len(same), round(0.7 * size))
            for _ in range(draws):
                picks = np.concatenate(
                    [rng.choice(same, k, replace=False), rng.choice(other, min(len(other), size - k), replace=False)]
                )
                out.append(picks)
    return out


def session_logits(
    head: HeadEnsemble,
    z: np.ndarray,
    groups: list[np.ndarray],
    shrink: float,
    weight: float = 1.0,
    kind: str = "mean",
    full_at: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of every clip of every session against its session's baseline, the clips' positions
    and their sessions' sizes (the baseline path scaled by :func:`ramped_weight` of ``weight``,
    ``full_at`` and the session's size)."""
    logits, where = [], []
    for group in groups:
        with torch.inference_mode():
            x = torch.from_numpy(z[group])
            base = speaker_baselines(head, x, torch.zeros(len(x), dtype=torch.long), 1, kind, shrink)
            logits.append(head(x, base.expand_as(x), ramped_weight(weight, full_at, len(group))).numpy())
        where.append(group)
    return np.concatenate(logits), np.concatenate(where), np.array([len(g) for g in groups for _ in g])


def ramped_shares(full_at: int, sizes: np.ndarray) -> np.ndarray:
    """Per row, the share of the baseline path's whole weight added against a baseline of ``sizes``
    clips (:func:`ramped_weight` of weight 1)."""
    return np.array([ramped_weight(1.0, full_at, int(n)) for n in sizes])


def baseline_temperatures(temperatures: tuple[float, float], full_at: int, sizes: np.ndarray) -> np.ndarray:
    """``(rows, 1)``: the temperature of each row's logits against a baseline of ``sizes`` clips
    (:func:`ramped_temperature` of the clip and whole-weight ``temperatures``)."""
    return np.array([ramped_temperature(*temperatures, full_at, int(n)) for n in sizes])[:, None]


def corpus_metrics(
    logits: np.ndarray, data: Dataset, rows: np.ndarray, temperature: float
) -> dict[str, dict[str, Any]]:
    """Metrics per corpus over that corpus's own label set (probabilities renormalised over it)."""
    out = {}
    for k, corpus in enumerate(data.corpora):
        here = data.corpus[rows] == k
        if not here.any():
            continue
        keep = [data.labels.index(label) for label in corpus.labels]
        probabilities = softmax(logits[here][:, keep], temperature)
        y = np.array([keep.index(v) for v in data.y[rows][here]])
        out[corpus.name] = metrics(probabilities, y, corpus.labels)
        out[corpus.name].update(served(logits[here], y, data.labels, corpus.labels, temperature))
    return out


def served(
    logits: np.ndarray, y: np.ndarray, labels: Sequence[str], own: Sequence[str], temperature: float = 1.0
) -> dict[str, float]:
    """UA and ECE of the top label over all the model's ``labels`` and its confidence, as the
    service answers, on clips of a corpus with the labels ``own`` (``y`` indexes them). A label the
    corpus lacks counts as the one it files it under (:data:`COVERED_BY`: calm as neutral for
    CREMA-D), any other as wrong."""
    as_own = np.full(len(labels), -1)
    for j, label in enumerate(labels):
        if label in own:
            as_own[j] = list(own).index(label)
        else:
            filed = [k for k, covered in COVERED_BY.items() if label in covered and k in own]
            as_own[j] = list(own).index(filed[0]) if filed else -1
    correct = as_own[logits.argmax(axis=1)] == y
    return {
        "ua_served": float(np.mean([np.mean(correct[y == c]) for c in np.unique(y)])),
        "ece_served": calibration_error(softmax(logits, temperature).max(axis=1), correct),
    }


def restricted_logits(logits: np.ndarray, data: Dataset, rows: np.ndarray) -> np.ndarray:
    """Logits with the labels outside each clip's corpus pushed out (for fitting a temperature)."""
    return np.where(data.mask[rows], logits, -1e4)


# --------------------------------------------------------------------------------------------
# The fit command


def speaker_folds(data: Dataset, rows: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Speaker-independent folds of ``rows``, each corpus's speakers spread evenly over them."""
    rng = np.random.default_rng(seed)
    groups: list[list[int]] = [[] for _ in range(folds)]
    for k in range(len(data.corpora)):
        speakers = rng.permutation(np.unique(data.speaker[rows][data.corpus[rows] == k]))
        for j, s in enumerate(speakers):
            groups[j % folds].append(int(s))
    return [rows[np.isin(data.speaker[rows], g)] for g in groups]


# The sessions the baseline weight and its temperature are chosen on: (name, kind, clips). Those of
# the held-out report (all the speaker's clips; 10 clips, 70% one emotion), and younger and older
# ones, at random and skewed: an interview holds 5-20 answers.
INNER_SESSIONS = (
    ("balanced", "balanced", 0),
    ("skewed", "skewed", 10),
    ("random5", "random", 5),
    ("skewed5", "skewed", 5),
    ("random10", "random", 10),
    ("random20", "random", 20),
    ("skewed20", "skewed", 20),
)


def out_of_fold(data: Dataset, rows: np.ndarray, config: HeadConfig, folds: int) -> dict[str, Any]:
    """Logits of every training clip from a head that never saw its speaker: per clip and in the
    sessions of :data:`INNER_SESSIONS` (there with the baseline path at weight 1 and alone)."""
    clip_parts, base_parts = [], []
    for k, held in enumerate(speaker_folds(data, rows, folds, config.seed)):
        started = time.perf_counter()
        head, mean, std = train_ensemble(data, np.setdiff1d(rows, held), config)
        z = standardise(data, held, mean, std)
        alone = clip_logits(head, z)
        clip_parts.append((held, alone))
        for j, (name, kind, size) in enumerate(INNER_SESSIONS):
            # The first two draw their sessions as before INNER_SESSIONS grew (the same seeds).
            groups = sessions(data, held, kind, config.seed + k + (1000 * j if j > 1 else 0), size=size or 10)
            logits, where, sizes = session_logits(head, z, groups, config.shrink, 1.0, config.baseline)
            base_parts.append((held[where], logits, alone[where], name, sizes))
        logger.info("inner fold %d/%d in %.0f s", k + 1, folds, time.perf_counter() - started)
    clip_rows = np.concatenate([r for r, _ in clip_parts])
    clip_all = np.concatenate([lg for _, lg in clip_parts])
    base_rows = np.concatenate([p[0] for p in base_parts])
    base_all = np.concatenate([p[1] for p in base_parts])
    alone_all = np.concatenate([p[2] for p in base_parts])
    kinds = np.concatenate([[p[3]] * len(p[0]) for p in base_parts])
    sizes = np.concatenate([p[4] for p in base_parts])
    return {"clip": (clip_rows, clip_all), "baseline": (base_rows, base_all, alone_all), "kinds": kinds, "sizes": sizes}


BASELINE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
# Clips from which the whole weight is added (ramped_weight; 0: from the first).
BASELINE_FULL_AT = (0, 10, 20, 30, 40, 60)
# How far below the clips alone a corpus's sessions may score and the weight still qualify: half a
# point, under the noise of a UA over a few thousand out-of-fold clips (its standard error is ~1 point).
BASELINE_TOLERANCE = 0.005


def choose_baseline_weight(
    data: Dataset,
    rows: np.ndarray,
    with_baseline: np.ndarray,
    alone: np.ndarray,
    kinds: np.ndarray,
    sizes: np.ndarray | None = None,
) -> tuple[tuple[float, int], dict[str, Any]]:
    """How much of the baseline path's correction to add, from out-of-fold session logits.

    For each weight of :data:`BASELINE_WEIGHTS` and each size of :data:`BASELINE_FULL_AT` from which
    it is whole (:func:`ramped_weight` of the session's ``sizes``; without ``sizes``, whole always),
    the clips of every kind of session are scored with the correction so scaled, and compared with
    the same clips alone. A rule qualifies when no corpus does worse than the clips alone in any
    kind of session (by more than :data:`BASELINE_TOLERANCE`); of those, the one with the best mean
    UA over the corpora and kinds of session wins (weight 0, the clip path, always qualifies).
    Returns ``(weight, full_at)`` and the table of each rule's gain per kind and corpus.
    """
    table: dict[str, Any] = {}
    best, best_score = (0.0, 0), -1.0
    rules = [(w, f) for w in BASELINE_WEIGHTS for f in (BASELINE_FULL_AT if sizes is not None else (0,)) if w or not f]
    # UA does not depend on the temperature: 1 here. The clips alone score the same under every rule.
    plain = {
        kind: corpus_metrics(alone[kinds == kind], data, rows[kinds == kind], 1.0) for kind in dict.fromkeys(kinds)
    }
    # Each whole-from size's shares once, not once per weight.
    shares = {f: np.ones(len(rows)) if sizes is None else ramped_shares(f, sizes) for _, f in rules}
    for weight, full_at in rules:
        logits = alone + weight * shares[full_at][:, None] * (with_baseline - alone)
        row, fine, score = {}, True, []
        for kind, alone_ua in plain.items():
            here = kinds == kind
            mixed = corpus_metrics(logits[here], data, rows[here], 1.0)
            for corpus, m in mixed.items():
                row[f"{kind} {corpus}"] = round(m["ua"] - alone_ua[corpus]["ua"], 4)
                fine &= m["ua"] >= alone_ua[corpus]["ua"] - BASELINE_TOLERANCE
                score.append(m["ua"])
        table[f"{weight:g}" + (f"@{full_at}" if full_at else "")] = row
        if fine and float(np.mean(score)) > best_score:
            best, best_score = (weight, full_at), float(np.mean(score))
    return best, table


def report_modes(
    data: Dataset,
    head: HeadEnsemble,
    rows: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    config: HeadConfig,
    temperatures: tuple[float, float],
    weight: float = 1.0,
    full_at: int = 0,
) -> dict[str, Any]:
    """Per-corpus metrics of ``rows`` per clip, and in balanced and skewed sessions with the baseline.

    In sessions, the same clips are also scored alone, so the two modes are compared on the same clips.
    """
    z = standardise(data, rows, mean, std)
    out: dict[str, Any] = {"clip": corpus_metrics(clip_logits(head, z), data, rows, temperatures[0])}
    for kind in ("balanced", "skewed"):
        logits, where, sizes = session_logits(
            head, z, sessions(data, rows, kind, config.seed + 101), config.shrink, weight, config.baseline, full_at
        )
        logits = logits / baseline_temperatures(temperatures, full_at, sizes)
        out[f"baseline_{kind}"] = corpus_metrics(logits, data, rows[where], 1.0)
        out[f"clip_{kind}"] = corpus_metrics(clip_logits(head, z[where]), data, rows[where], temperatures[0])
    if data.speech:  # the same clips with their silences cut, as MODEL_INPUT=speech serves them
        z = standardise(data, rows, mean, std, version=data.features.shape[1] - 1)
        out["clip_speech"] = corpus_metrics(clip_logits(head, z), data, rows, temperatures[0])
        logits, where, sizes = session_logits(
            head,
            z,
            sessions(data, rows, "balanced", config.seed + 101),
            config.shrink,
            weight,
            config.baseline,
            full_at,
        )
        logits = logits / baseline_temperatures(temperatures, full_at, sizes)
        out["baseline_balanced_speech"] = corpus_metrics(logits, data, rows[where], 1.0)
    return out


def fit_head(
    data: Dataset,
    train_rows: np.ndarray,
    config: HeadConfig,
    inner_folds: int,
    network: tuple[HeadEnsemble, np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Inner folds (temperatures, cross-validated figures), then the head on every training speaker.

    With ``network`` (a head, mean and std that this recipe trained on ``train_rows`` before:
    :func:`reused_network`), that head is kept and only its baseline rule and temperatures are
    chosen, on the inner folds as ever.
    """
    from .common import fit_temperature

    oof = out_of_fold(data, train_rows, config, inner_folds)
    clip_rows, clip_all = oof["clip"]
    base_rows, base_full, alone = oof["baseline"]
    kinds = oof["kinds"]
    (weight, full_at), weights = choose_baseline_weight(data, base_rows, base_full, alone, kinds, oof["sizes"])
    shares = ramped_shares(full_at, oof["sizes"])
    base_all = alone + weight * shares[:, None] * (base_full - alone)
    # Each corpus's NLL weighs the same in the temperatures (see fit_temperature); the baseline's
    # over every kind of session, young and old, as served, moving from the clip path's as the
    # weight grows (ramped_temperature).
    t_clip = fit_temperature(restricted_logits(clip_all, data, clip_rows), data.y[clip_rows], data.corpus[clip_rows])
    t_base = fit_temperature(
        restricted_logits(base_all, data, base_rows),
        data.y[base_rows],
        data.corpus[base_rows],
        start=t_clip,
        shares=shares,
    )
    base_all = base_all / baseline_temperatures((t_clip, t_base), full_at, oof["sizes"])
    reported = np.isin(kinds, ("balanced", "skewed"))  # the kinds of the held-out report
    inner = {
        "clip": corpus_metrics(clip_all, data, clip_rows, t_clip),
        "baseline": corpus_metrics(base_all[reported], data, base_rows[reported], 1.0),
        "baseline_skewed": corpus_metrics(base_all[kinds == "skewed"], data, base_rows[kinds == "skewed"], 1.0),
    }
    started = time.perf_counter()
    head, mean, std = network if network is not None else train_ensemble(data, train_rows, config)
    return {
        "head": head,
        "mean": mean,
        "std": std,
        "temperatures": (t_clip, t_base),
        "baseline_weight": weight,
        "baseline_full_at": full_at,
        "baseline_weights": weights,
        "inner": inner,
        "train_seconds": time.perf_counter() - started,
    }


def reused_network(
    directory: Path, config: HeadConfig, labels: tuple[str, ...], train_speakers: list[str], augment_copies: int
) -> tuple[HeadEnsemble, np.ndarray, np.ndarray, str]:
    """The network, mean and std of the head in ``directory``, and its version, if this recipe trained it.

    Its ``metrics.json`` must record the same recipe (``config``, augmented copies), labels and
    training speakers: then this command's inner folds train as it was trained, and a baseline rule
    chosen on them fits it.

    Raises:
        SystemExit: The folder holds no head, or one trained otherwise (the message says what differs).
    """
    import json

    from ..models.encoder import HEAD_FILE, HeadCheckpoint

    file, metrics_file = directory / HEAD_FILE, directory / "metrics.json"
    if not file.is_file() or not metrics_file.is_file():
        raise SystemExit(f"--reuse-head {directory}: no {HEAD_FILE} and metrics.json there; name a head's folder")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    # A field added to the recipe since that head was trained has its default, the old behaviour.
    recorded = {
        "config": {**dataclasses.asdict(HeadConfig()), **metrics.get("config", {})},
        "labels": metrics.get("labels"),
        "training speakers": metrics.get("train_speakers"),
        "augmented copies": metrics.get("augment_copies"),
    }
    wanted = {
        "config": dataclasses.asdict(config),
        "labels": list(labels),
        "training speakers": train_speakers,
        "augmented copies": augment_copies,
    }
    differ = [k for k in wanted if recorded[k] != wanted[k]]
    if differ:
        if "config" in differ:
            changed = {
                k: (recorded["config"].get(k), v) for k, v in wanted["config"].items() if recorded["config"].get(k) != v
            }
            raise SystemExit(
                f"--reuse-head {directory}: that head was trained with another recipe ({changed}, as (its, this"
                " command's)); run its own command (metrics.json 'command') with --reuse-head, or train afresh"
            )
        raise SystemExit(
            f"--reuse-head {directory}: that head was trained on other {' and '.join(differ)}; run its own"
            " command (metrics.json 'command') with --reuse-head, or train afresh"
        )
    checkpoint = HeadCheckpoint.from_file(file)
    head = HeadEnsemble(
        [
            EmotionHead(
                config.depth + 1, checkpoint.mean.shape[-1], len(labels), config.hidden, config.dropout, config.reads
            )
            for _ in range(config.members)
        ]
    )
    head.load_state_dict(checkpoint.state)
    return head.eval(), checkpoint.mean, checkpoint.std, checkpoint.version


def _versions_for(data_clips: Sequence[Clip], test: set[str], augment_copies: int, speech: bool) -> list[list[int]]:
    """Training clips: clean, degraded copies (and speech only); held-out ones: clean (and speech only)."""
    tail = [SPEECH] if speech else []
    return [[0, *tail] if c.speaker in test else [*range(augment_copies + 1), *tail] for c in data_clips]


def _pad_versions(features: list[list[np.ndarray]], speech: bool = False) -> list[list[np.ndarray]]:
    """Clips with fewer versions (held-out ones) repeat their clean one in place of the degraded
    copies, which they are never trained on; the speech-only version stays last."""
    most = max(len(f) for f in features)
    if speech:
        return [f[:-1] + [f[0]] * (most - len(f)) + f[-1:] for f in features]
    return [f + [f[0]] * (most - len(f)) for f in features]


def linear_probe(data: Dataset, train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> dict[str, Any]:
    """The plain baseline on the same split: logistic regression on every state's clean statistics."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def design(rows: np.ndarray) -> np.ndarray:
        return data.features[rows, 0].reshape(len(rows), -1).astype(np.float32)

    scaler = StandardScaler().fit(design(train_rows))
    model = LogisticRegression(max_iter=500, C=0.01, random_state=seed)
    model.fit(scaler.transform(design(train_rows)), data.y[train_rows])
    logits = np.full((len(test_rows), len(data.labels)), -1e4)
    logits[:, model.classes_] = model.decision_function(scaler.transform(design(test_rows)))
    return {k: v["ua"] for k, v in corpus_metrics(logits, data, test_rows, 1.0).items()}


def fit(args: Any) -> dict[str, Any]:
    """``train fit --kind encoder``: features, inner folds, the head, held-out report, files."""
    import json
    import platform
    import shutil

    from ..models.encoder import HEAD_FILE, HeadCheckpoint

    if args.members < 1:
        raise SystemExit(f"--members {args.members}: train at least one head (--members 1 or more)")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    encoder_dir = Path(args.encoder)
    corpora = read_corpora(args.manifest)
    labels = tuple(label for label in CANONICAL_LABELS if any(label in c.labels for c in corpora))
    clips = [clip for corpus in corpora for clip in corpus.clips]
    from .common import select_speakers

    test = select_speakers(clips, args.test_speakers) if args.test_speakers else set()
    config = HeadConfig(
        depth=args.depth,
        epochs=args.epochs,
        hidden=args.hidden,
        seed=args.seed,
        speech_share=args.speech_share,
        baseline=args.baseline,
        relative_loss=args.baseline_path,
        reads=args.baseline_reads,
        members=args.members,
        max_baseline=args.max_baseline,
        baseline_sizes=args.baseline_sizes,
    )
    network: tuple[HeadEnsemble, np.ndarray, np.ndarray] | None = None
    reused = ""
    if args.reuse_head:
        train_speakers = sorted({c.speaker for c in clips} - test)
        kept, kept_mean, kept_std, reused = reused_network(
            Path(args.reuse_head), config, labels, train_speakers, args.augment
        )
        network = (kept, kept_mean, kept_std)
    speech = args.speech_share > 0
    features = extract(
        clips, _versions_for(clips, test, args.augment, speech), encoder_dir, seed=args.seed, workers=args.workers
    )
    data = build_dataset(corpora, _pad_versions(features, speech), labels, speech)
    train_rows = np.array([i for i, c in enumerate(clips) if c.speaker not in test])
    test_rows = np.array([i for i, c in enumerate(clips) if c.speaker in test])
    fitted = fit_head(data, train_rows, config, args.inner_folds, network)
    head, mean, std = fitted["head"], fitted["mean"], fitted["std"]
    t_clip, t_base = fitted["temperatures"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = HeadCheckpoint(
        labels=labels,
        depth=config.depth,
        mean=mean,
        std=std,
        state={k: v.clone() for k, v in head.state_dict().items()},
        hidden=config.hidden,
        members=config.members,
        temperature_clip=t_clip,
        temperature_baseline=t_base,
        shrink=config.shrink,
        min_baseline=config.min_baseline,
        baseline_weight=fitted["baseline_weight"],
        baseline_full_at=fitted["baseline_full_at"],
        baseline=config.baseline,
        reads=config.reads,
        version="",
        licence=args.licence,
        commercial_use=args.commercial_use,
        attribution=args.attribution,
    )
    file = out / HEAD_FILE
    checkpoint.to_file(file)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    checkpoint.version = f"{args.version or 'whisper-base-head-1.0'}+{digest}"
    checkpoint.to_file(file)
    report: dict[str, Any] = {
        "kind": "encoder",
        "model_version": checkpoint.version,
        "command": shlex.join(["python", "-m", "emotion_service.train", *getattr(args, "argv", [])]),
        "manifests": [str(m) for m in args.manifest],
        "corpora": {c.name: {"clips": len(c.clips), "labels": list(c.labels)} for c in corpora},
        "labels": list(labels),
        "test_speakers": sorted(test),
        "train_speakers": sorted({c.speaker for c in clips} - test),
        "config": dataclasses.asdict(config),
        "augment_copies": args.augment,
        "covered_labels": {label: list(covered) for label, covered in COVERED_BY.items()},
        "inner_folds": args.inner_folds,
        "temperatures": {"clip": t_clip, "baseline": t_base},
        "baseline_weight": fitted["baseline_weight"],
        "baseline_full_at": fitted["baseline_full_at"],
        "baseline_weights_inner": fitted["baseline_weights"],
        "network_from": reused,
        "inner_validation": fitted["inner"],
        "layer_weights": head.layer_weights().tolist(),
        "licence": args.licence,
        "commercial_use": args.commercial_use,
        "attribution": args.attribution,
        "encoder": str(encoder_dir),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "head_file_bytes": file.stat().st_size,
    }
    if len(test_rows):
        report["test"] = report_modes(
            data,
            head,
            test_rows,
            mean,
            std,
            config,
            (t_clip, t_base),
            fitted["baseline_weight"],
            fitted["baseline_full_at"],
        )
        report["test_linear_probe_ua"] = linear_probe(data, train_rows, test_rows, args.seed)
    report["training_seconds"] = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(render_card(report), encoding="utf-8")
    if args.copy_encoder:
        shutil.copytree(encoder_dir, out / "encoder", dirs_exist_ok=True)
    return report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _mode_rows(block: dict[str, Any], corpus: str) -> list[str]:
    rows = []
    names = {
        "clip": "per clip (`/analyze` without `candidate_id`)",
        "clip_balanced": "same clips as the row below, per clip",
        "baseline_balanced": "baseline: all the speaker's clips",
        "clip_skewed": "same clips as the row below, per clip",
        "baseline_skewed": "baseline: sessions of 10 clips, 70% one emotion",
        "clip_speech": "per clip, silences cut (`MODEL_INPUT=speech`)",
        "baseline_balanced_speech": "baseline: all the speaker's clips, silences cut",
    }
    for mode, title in names.items():
        m = block.get(mode, {}).get(corpus)
        if m:
            served = _pct(m["ua_served"]) if "ua_served" in m else "–"
            if "ece_served" in m:
                served += f" (ECE {m['ece_served']:.3f})"
            rows.append(
                f"| {title} | **{_pct(m['ua'])}** | {served} | {_pct(m['wa'])} | {m['ece']:.3f} | {m['clips']} |"
            )
    return rows


def _confusion(m: dict[str, Any]) -> list[str]:
    labels = m["labels"]
    lines = ["| true \\ predicted | " + " | ".join(labels) + " | recall |", "|---" * (len(labels) + 2) + "|"]
    for i, label in enumerate(labels):
        row = m["confusion"][i]
        recall = m["per_class_recall"].get(label)
        lines.append(f"| {label} | " + " | ".join(map(str, row)) + f" | {'' if recall is None else _pct(recall)} |")
    return lines


def render_card(report: dict[str, Any]) -> str:
    """MODEL_CARD.md of an encoder head, from its metrics.json."""
    cfg = report["config"]
    lines = [
        f"# Model card: Whisper-base encoder + emotion head `{report['model_version']}`",
        "",
        "OpenAI Whisper `base`'s audio encoder (multilingual, 20.6M parameters, frozen, MIT) run on each clip's",
        "real length; the mean and standard deviation of each of its hidden states over the clip feed a small",
        "trained head: a learned weighting of the hidden states, then an MLP. The head has a per-clip path and a",
        "baseline path that reads how the clip differs from the speaker's usual voice (their running",
        "feature statistics: `candidate_id`, or the clips of one `/batch_analyze` or job).",
        "",
        "## Data and licence",
        "",
    ]
    for name, corpus in report["corpora"].items():
        lines.append(f"- `{name}`: {corpus['clips']} clips, labels {', '.join(corpus['labels'])}.")
    lines += [
        f"- Outputs: {', '.join(report['labels'])}. "
        + (
            "Each clip's loss runs over every output; a corpus's label also covers the labels the corpus lacks"
            " and files under it (a CREMA-D neutral clip teaches 'neutral or calm'), so a corpus without calm never"
            " teaches 'not calm' by omission, and no output is left untrained on a corpus's voices."
            if report.get("covered_labels")
            else "Each corpus's loss sees only its own labels (the 1.1 and 1.2 heads)."
        ),
        "- Held out for the report only (never used to choose anything): " + ", ".join(report["test_speakers"]) + ".",
        f"- Licence of the head: **{report['licence']}**. Commercial use: {'yes' if report['commercial_use'] else 'no'}.",
    ]
    if report.get("attribution"):
        lines.append(f"- Attribution: {report['attribution']}")
    lines += [
        "- The encoder's weights: OpenAI Whisper `base`, MIT licence (`whisper-base-encoder/LICENSE`, provenance in its README).",
        "",
        "## Recipe",
        "",
        f"- Encoder states used: {cfg['depth'] + 1} (input of layer 1 and the outputs of layers 1-{cfg['depth']});"
        " learned weights: " + ", ".join(f"{w:.2f}" for w in report["layer_weights"]) + ".",
        f"- Head: MLP {cfg['hidden']} hidden, dropout {cfg['dropout']}; AdamW one-cycle lr {cfg['learning_rate']},"
        f" {cfg['epochs']} epochs, batch {cfg['batch_size']}, class-balanced loss, label smoothing {cfg['label_smoothing']},"
        f" seed {cfg['seed']}"
        + (
            f"; {cfg['members']} such heads, trained from seeds {cfg['seed']}-{cfg['seed'] + cfg['members'] - 1},"
            " answer as one (their logits averaged; the baseline is formed from their mean clip probabilities)."
            if cfg.get("members", 1) > 1
            else "."
        ),
        f"- Augmentation: {report['augment_copies']} degraded copies per training clip (speed, reverberation, microphone"
        f" colouring, telephone band, noise, gain), applied before the encoder and cached;"
        f" {_pct(cfg['clean_share'] * (1 - cfg.get('speech_share', 0)))} of examples are clean"
        + (
            f", {_pct(cfg['speech_share'])} are the clean clip with its silences cut by the energy VAD, as"
            " `MODEL_INPUT=speech` serves them, so that the head does not lean on a corpus's silences."
            if cfg.get("speech_share")
            else "."
        ),
        f"- Baselines in training: random subsets of 1-{cfg['max_baseline']} of the speaker's clips (the clip itself"
        " included"
        + ("; their sizes log-uniform, as many of 2-4 clips as of 16-32" if cfg.get("baseline_sizes") == "log" else "")
        + f"), {_pct(cfg['skewed_share'])} of them skewed ({_pct(cfg['dominant_share'])} one emotion); "
        + (
            "the baseline is the mean of the centroids of the emotions the clip path hears in them, each emotion"
            " weighing the same however often it was heard, so that a session that leans one way does not become"
            " the speaker's usual voice"
            if cfg.get("baseline", "mean") == "labels"
            else "the baseline is the clips' mean"
        )
        + f"; it is shrunk towards the population ({cfg['shrink']:g} pseudo-clips); below"
        f" {cfg['min_baseline']} clips the per-clip path answers.",
        (
            "- The baseline path reads "
            + (
                "only how the clip differs from the baseline"
                if cfg.get("reads") == "difference"
                else "the clip and how it differs from the baseline"
            )
            + "; it is trained to classify by itself"
            + (", and its sum with the clip path too" if cfg.get("relative_loss") == "combined" else "")
            + "; served, its logits are added to the clip path's,"
            if cfg.get("relative_loss", "residual") in ("alone", "combined")
            else "- The baseline path is trained as a correction to the clip path, added"
        )
        + f" scaled by the baseline weight {report.get('baseline_weight', 1.0):g}"
        + (
            f", whole from {report['baseline_full_at']} clips and ramped up to it linearly before: the rule (weights"
            f" {', '.join(f'{w:g}' for w in BASELINE_WEIGHTS)}; whole from the first clip or from"
            f" {', '.join(map(str, BASELINE_FULL_AT[1:]))}) with the best inner-fold UA over sessions of all the"
            " speaker's clips and of 5, 10 and 20 clips, at random and 70% one emotion, among those under which no"
            " corpus scores more than half a point worse with the baseline than alone in any of them."
            if "baseline_full_at" in report
            else ": the weight (of 0, 0.25, 0.5, 0.75, 1) with the best inner-fold UA among those under which no corpus"
            " scores more than half a point worse with the baseline than alone, in balanced or skewed sessions."
        ),
        f"- Calibration: one temperature per path, fitted (NLL, each corpus weighing the same) on"
        f" {report['inner_folds']} speaker-independent inner folds of the training speakers: clip"
        f" {report['temperatures']['clip']:.3f}, baseline {report['temperatures']['baseline']:.3f}"
        + (
            " (at the whole weight; a younger baseline's moves there from the clip path's as its weight grows)."
            if report.get("baseline_full_at")
            else "."
        ),
        f"- Training time: {report['training_seconds'] / 60:.1f} min on {report['machine']} (encoder features cached;"
        " the first run also encodes every clip)"
        + (
            f". The network is that of `{report['network_from']}`, trained by the same command: this run trained"
            " only the inner folds, on which it chose the baseline rule and the temperatures."
            if report.get("network_from")
            else "."
        ),
        "",
        "## Inner cross-validation (training speakers, out of fold)",
        "",
        "| corpus | per clip UA | with baseline UA | skewed sessions UA |",
        "|---|---|---|---|",
    ]
    inner = report["inner_validation"]
    for corpus in inner["clip"]:
        lines.append(
            f"| {corpus} | {_pct(inner['clip'][corpus]['ua'])} | {_pct(inner['baseline'][corpus]['ua'])} |"
            f" {_pct(inner['baseline_skewed'][corpus]['ua'])} |"
        )
    test = report.get("test")
    if test:
        lines += [
            "",
            "## Held-out speakers",
            "",
            "UA = mean per-class recall over the corpus's own labels; served UA = the same, of the top label over"
            " every output as the service answers (a label the corpus lacks counted as the one it files it under:"
            " calm as neutral for CREMA-D, any other as wrong); ECE over 10 bins of the top label's confidence.",
            "",
        ]
        for corpus in test["clip"]:
            probe = report.get("test_linear_probe_ua", {}).get(corpus)
            lines += [
                f"### {corpus} ({len(report['corpora'][corpus]['labels'])} classes)",
                "",
                "| mode | UA | served UA | WA | ECE | clips |",
                "|---|---|---|---|---|---|",
                *_mode_rows(test, corpus),
                "",
                f"Linear probe on the same split (logistic regression, all states' statistics, per clip): UA {_pct(probe)}."
                if probe is not None
                else "",
                "",
                "Confusion, per clip:",
                "",
                *_confusion(test["clip"][corpus]),
                "",
                "Confusion, with the baseline (all the speaker's clips):",
                "",
                *_confusion(test["baseline_balanced"][corpus]),
                "",
            ]
    lines += [
        "## Reproduce",
        "",
        "```",
        report["command"],
        "```",
        "",
        "All numbers here are in `metrics.json` beside this card.",
        "",
    ]
    return "\n".join(lines)


def read_audio_of(clip: Clip) -> np.ndarray:
    return read_audio(clip.path)


def evaluate(args: Any) -> dict[str, Any]:
    """``train evaluate`` of a head folder: per clip and with baselines, per corpus, through the serving model.

    The clips go through :class:`EncoderModel` exactly as in the service (``--quantize int8`` for
    the int8 encoder), not through the training cache.
    """
    from ..models.encoder import EncoderModel
    from .common import select_speakers

    torch.set_num_threads(args.threads)
    model = EncoderModel.load(args.model, encoder_dir=args.encoder, quantize=args.quantize)
    corpora = read_corpora(args.manifest)
    clips = [clip for corpus in corpora for clip in corpus.clips]
    if args.speakers:
        chosen = select_speakers(clips, args.speakers)
        corpora = [Corpus(c.name, [x for x in c.clips if x.speaker in chosen], c.labels) for c in corpora]
        clips = [clip for corpus in corpora for clip in corpus.clips]
    labels = model.labels
    unknown = sorted({c.label for c in clips} - set(labels))
    if unknown:
        raise ValueError(f"the model cannot output {unknown}; evaluate it on corpora whose labels it knows")
    if args.speech_only:
        from ..audio.segmentation import SegmentOptions, speech_only

        def audio_of(clip: Clip) -> np.ndarray:
            return speech_only(read_audio(clip.path), SegmentOptions(vad="energy"))
    else:
        audio_of = read_audio_of
    z = np.concatenate([model.standardised([audio_of(c)]) for c in clips])
    data = Dataset(
        clips=clips,
        corpus=np.array([k for k, corpus in enumerate(corpora) for _ in corpus.clips]),
        y=np.array([labels.index(c.label) for c in clips]),
        speaker=np.unique([c.speaker for c in clips], return_inverse=True)[1],
        features=np.zeros((len(clips), 1, 1, 1), dtype=np.float16),
        mask=np.array([[label in corpus.labels for label in labels] for corpus in corpora for _ in corpus.clips]),
        labels=labels,
        corpora=corpora,
    )
    rows = np.arange(len(clips))
    head, checkpoint = model.head, model.checkpoint
    temperatures = (checkpoint.temperature_clip, checkpoint.temperature_baseline)
    result: dict[str, Any] = {
        "model": model.info.version,
        "dtype": model.info.extra["dtype"],
        "speech_only": bool(args.speech_only),
    }
    result["clip"] = corpus_metrics(clip_logits(head, z), data, rows, temperatures[0])
    for kind in ("balanced", "skewed"):
        logits, where, sizes = session_logits(
            head,
            z,
            sessions(data, rows, kind, args.seed + 101),
            checkpoint.shrink,
            checkpoint.baseline_weight,
            checkpoint.baseline,
            checkpoint.baseline_full_at,
        )
        logits = logits / baseline_temperatures(temperatures, checkpoint.baseline_full_at, sizes)
        result[f"baseline_{kind}"] = corpus_metrics(logits, data, rows[where], 1.0)
    return result
