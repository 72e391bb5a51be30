"""Train and evaluate the bundled emotion model on any corpus listed in a manifest CSV.

One step retrains the shipped model on data you hold rights to::

    python -m emotion_service.train fit --manifest corpus/manifest.csv --out emotion_service/resources/bundled

The manifest has the columns ``path`` (relative to the manifest's folder), ``speaker`` and
``emotion`` (any name :func:`emotion_service.labels.canonical_label` knows; rows with other
names are skipped). ``fit`` holds out ``--test-speakers`` for the final report, trains on the
rest, fits a calibration temperature on speaker-independent inner validation folds, reports
speaker-independent k-fold cross-validation, and writes ``model.pt``, ``metrics.json`` and
``MODEL_CARD.md``. ``evaluate`` scores a saved model on any manifest; its last stdout line is
one JSON object.

Everything is seeded: the same command on the same machine gives the same model file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import pickle
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .audio.features import MelConfig, Normaliser, clip_features, mfcc_statistics, normalise
from .labels import CANONICAL_LABELS
from .models.bundled import MODEL_FILE, BundledModel, EmotionCNN, make_checkpoint, pad_frames
from .models.encoder import RELATIVE_READS
from .training import encoder as encoder_training
from .training.common import (  # noqa: F401  (re-exported: the trainers' shared vocabulary)
    AUGMENT_VERSION,
    Clip,
    augment,
    cache_dir,
    fit_temperature,
    metrics,
    read_audio,
    read_manifest,
    select_speakers,
    softmax,
    split_validation,
)
from .training.encoder import BASELINE_SIZES, HeadConfig

logger = logging.getLogger("emotion_service.train")

SHIPPED_ENCODER = Path(__file__).resolve().parent / "resources" / "whisper-base-encoder"
DEFAULT_LICENCE = "CC BY-NC-SA 4.0 (trained on RAVDESS; retrain on your own data for commercial use)"


# --------------------------------------------------------------------------------------------
# Data


# --------------------------------------------------------------------------------------------
# Features (cached outside the repository)


def _clip_versions(clip: Clip, mel: MelConfig, n_augment: int, seed: int) -> list[np.ndarray]:
    audio = read_audio(clip.path)
    # One generator per clip: the copies do not depend on the order or subset of clips.
    rng = np.random.default_rng([seed, int(hashlib.sha256(clip.path.name.encode()).hexdigest()[:8], 16)])
    return [clip_features(audio, mel)] + [clip_features(augment(audio, rng), mel) for _ in range(n_augment)]


def extract(
    clips: Sequence[Clip], mel: MelConfig, n_augment: int, seed: int, cache: bool = True, workers: int = 1
) -> list[list[np.ndarray]]:
    """For each clip, the trimmed log-mel of the clean audio, then of ``n_augment`` degraded copies."""
    key = hashlib.sha256(
        json.dumps(
            [[str(c.path), os.path.getmtime(c.path)] for c in clips] + [repr(mel), n_augment, seed, AUGMENT_VERSION]
        ).encode()
    ).hexdigest()[:16]
    file = cache_dir() / f"features-{key}.pkl"
    if cache and file.is_file():
        with file.open("rb") as handle:
            return pickle.load(handle)  # our own cache file, written below
    started = time.perf_counter()
    work = partial(_clip_versions, mel=mel, n_augment=n_augment, seed=seed)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            result = list(pool.map(work, clips, chunksize=16))
    else:
        result = [work(clip) for clip in clips]
    logger.info("features of %d clips in %.0f s", len(clips), time.perf_counter() - started)
    if cache:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(file)
    return result


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    crop_frames: int = 200
    width: int = 24
    dropout: float = 0.2
    n_augment: int = 4
    clean_share: float = 0.5  # share of training examples drawn from the clean copy
    mixup: float = 0.4  # alpha of the beta distribution of mixup weights; 0: no mixup
    speaker_norm_share: float = 0.5  # share of training examples normalised per speaker, not per clip
    label_smoothing: float = 0.05
    seed: int = 0
    device: str = "cpu"
    mel: MelConfig = field(default_factory=MelConfig)

    def architecture(self) -> dict[str, Any]:
        return {"width": self.width, "dropout": self.dropout}


def _speaker_normalisers(
    indices: Sequence[int], clips: Sequence[Clip], features: Sequence[Sequence[np.ndarray]]
) -> dict[str, Normaliser]:
    by_speaker: dict[str, list[np.ndarray]] = {}
    for i in indices:
        by_speaker.setdefault(clips[i].speaker, []).extend(features[i])
    return {speaker: Normaliser.fit(f) for speaker, f in by_speaker.items()}


def _crop(f: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    if f.shape[1] < frames:
        f = np.tile(f, (1, -(-frames // f.shape[1])))
        start = 0
    else:
        start = int(rng.integers(0, f.shape[1] - frames + 1))
    return f[:, start : start + frames]


def _spec_augment(batch: torch.Tensor, generator: torch.Generator, masks: int = 2) -> torch.Tensor:
    """SpecAugment: zero ``masks`` random mel bands (up to 8 wide) and time spans (up to 1/8)."""
    n, n_mels, frames = batch.shape
    keep = torch.ones(n, n_mels, frames)
    for size, max_width, axis in ((n_mels, 9, 1), (frames, frames // 8, 2)):
        width = torch.randint(0, max_width, (n, masks), generator=generator)
        start = (torch.rand(n, masks, generator=generator) * (size - width + 1)).long()
        position = torch.arange(size).view(1, 1, -1)
        hit = ((position >= start.unsqueeze(2)) & (position < (start + width).unsqueeze(2))).any(dim=1)
        keep = keep * (~hit).float().unsqueeze(3 - axis)
    return batch * keep


def train_network(
    clips: Sequence[Clip],
    features: Sequence[Sequence[np.ndarray]],
    train_idx: Sequence[int],
    labels: Sequence[str],
    config: TrainConfig,
) -> EmotionCNN:
    """Train the CNN on the clips ``train_idx`` (all their clean and degraded copies)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = EmotionCNN(len(labels), n_mels=config.mel.n_mels, **config.architecture()).to(config.device)
    label_index = {label: i for i, label in enumerate(labels)}
    y_all = np.array([label_index[clips[i].label] for i in train_idx])
    counts = np.bincount(y_all, minlength=len(labels)).astype(np.float64)
    # Balanced classes: the target is unweighted accuracy, and RAVDESS has half as much neutral.
    class_weights = torch.tensor(counts.sum() / (len(labels) * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights.to(config.device), label_smoothing=config.label_smoothing)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    speaker_norm = _speaker_normalisers(train_idx, clips, features)
    # Normalise every copy once per mode; cropping and masking happen per batch.
    per_clip = [[Normaliser.fit([v])(v) for v in features[i]] for i in train_idx]
    per_speaker = [[speaker_norm[clips[i].speaker](v) for v in features[i]] for i in train_idx]
    started = time.perf_counter()
    for epoch in range(config.epochs):
        network.train()
        order = rng.permutation(len(train_idx))
        total = 0.0
        for b in range(steps_per_epoch):
            chosen = order[b * config.batch_size : (b + 1) * config.batch_size]
            batch = []
            for j in chosen:
                source = per_speaker if rng.random() < config.speaker_norm_share else per_clip
                copies = source[j]
                use_clean = len(copies) == 1 or rng.random() < config.clean_share
                version = copies[0] if use_clean else copies[int(rng.integers(1, len(copies)))]
                batch.append(_crop(version, config.crop_frames, rng))
            x = _spec_augment(torch.from_numpy(np.stack(batch)), generator).to(config.device)
            y = torch.from_numpy(y_all[chosen]).to(config.device)
            if config.mixup > 0:
                lam = float(rng.beta(config.mixup, config.mixup))
                perm = torch.from_numpy(rng.permutation(len(chosen))).to(config.device)
                out = network(lam * x + (1 - lam) * x[perm])
                loss = lam * loss_fn(out, y) + (1 - lam) * loss_fn(out, y[perm])
            else:
                loss = loss_fn(network(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += loss.item() * len(chosen)
        logger.info(
            "epoch %d/%d loss %.3f (%.0f s)",
            epoch + 1,
            config.epochs,
            total / len(train_idx),
            time.perf_counter() - started,
        )
    return network.cpu().eval()


def network_logits(
    network: EmotionCNN,
    clips: Sequence[Clip],
    features: Sequence[Sequence[np.ndarray]],
    idx: Sequence[int],
    *,
    same_speaker: bool = False,
) -> np.ndarray:
    """Logits of the clean copies of ``idx``, normalised per clip or per speaker."""
    clean = [features[i][0] for i in idx]
    if same_speaker:
        normalised: list[np.ndarray] = [np.empty(0)] * len(idx)
        groups: dict[str, list[int]] = {}
        for k, i in enumerate(idx):
            groups.setdefault(clips[i].speaker, []).append(k)
        for ks in groups.values():
            for k, f in zip(ks, normalise([clean[k] for k in ks], same_speaker=True), strict=True):
                normalised[k] = f
    else:
        normalised = normalise(clean)
    with torch.inference_mode():
        return np.stack([network(torch.from_numpy(pad_frames(f)).unsqueeze(0))[0].numpy() for f in normalised])


# --------------------------------------------------------------------------------------------
# The fit command


def baseline_ua(
    clips: Sequence[Clip],
    features: Sequence[Sequence[np.ndarray]],
    train_idx: Sequence[int],
    test_idx: Sequence[int],
    labels: Sequence[str],
) -> float:
    """The plain MFCC-statistics + logistic-regression baseline (clean audio, no normalisation)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def design(idx: Sequence[int]) -> np.ndarray:
        return np.stack([mfcc_statistics(features[i][0]) for i in idx])

    index = {label: i for i, label in enumerate(labels)}
    scaler = StandardScaler().fit(design(train_idx))
    model = LogisticRegression(max_iter=3000, C=0.1)
    model.fit(scaler.transform(design(train_idx)), [index[clips[i].label] for i in train_idx])
    probabilities = np.zeros((len(test_idx), len(labels)))
    probabilities[:, model.classes_] = model.predict_proba(scaler.transform(design(test_idx)))
    return metrics(probabilities, np.array([index[clips[i].label] for i in test_idx]), labels)["ua"]


def fit(args: argparse.Namespace) -> dict[str, Any]:
    """Train, calibrate, evaluate and write the model, its metrics and its card."""
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    # CPU runs are bit-for-bit repeatable; some CUDA kernels have no deterministic version.
    torch.use_deterministic_algorithms(True, warn_only=args.device != "cpu")
    config = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        n_augment=args.augment,
        width=args.width,
        mixup=args.mixup,
        clean_share=args.clean_share,
        device=args.device,
    )
    clips = read_manifest(args.manifest)
    labels = [label for label in CANONICAL_LABELS if any(c.label == label for c in clips)]
    y = np.array([labels.index(c.label) for c in clips])
    test_speakers = select_speakers(clips, args.test_speakers) if args.test_speakers else set()
    dev_speakers = sorted({c.speaker for c in clips} - test_speakers)
    if len(dev_speakers) < 2:
        raise ValueError("training needs at least two speakers outside --test-speakers (one for validation)")
    logger.info(
        "%d clips, %d labels, %d training speakers, %d test speakers",
        len(clips),
        len(labels),
        len(dev_speakers),
        len(test_speakers),
    )
    features = extract(clips, config.mel, config.n_augment, config.seed, cache=not args.no_cache, workers=args.workers)
    logger.info("features ready (%.0f s)", time.perf_counter() - started)

    def indices(speakers: set[str] | list[str]) -> list[int]:
        return [i for i, c in enumerate(clips) if c.speaker in speakers]

    # 1. Calibration: a temperature fitted on speaker-independent inner validation folds of the
    #    training speakers; the test speakers are never used to choose anything.
    # Groups of about a fifth of the training speakers; the first --inner-folds of them validate.
    groups = split_validation(dev_speakers, min(5, len(dev_speakers)), config.seed)
    inner_folds = groups[: max(1, min(args.inner_folds, len(groups) - 1))]
    val_logits, val_y, val_report = [], [], []
    for k, val_speakers in enumerate(inner_folds):
        fold_train = indices(set(dev_speakers) - set(val_speakers))
        fold_val = indices(set(val_speakers))
        logger.info("inner fold %d/%d: validation speakers %s", k + 1, len(inner_folds), ", ".join(val_speakers))
        network = train_network(clips, features, fold_train, labels, config)
        z = network_logits(network, clips, features, fold_val)
        val_logits.append(z)
        val_y.append(y[fold_val])
        val_report.append({"speakers": val_speakers, "ua": metrics(softmax(z), y[fold_val], labels)["ua"]})
    temperature = fit_temperature(np.concatenate(val_logits), np.concatenate(val_y))
    inner = metrics(softmax(np.concatenate(val_logits), temperature), np.concatenate(val_y), labels)
    logger.info("temperature %.3f; inner validation UA %.3f ECE %.3f", temperature, inner["ua"], inner["ece"])

    # 2. The model: all training speakers, same recipe, that temperature.
    dev_idx = indices(set(dev_speakers))
    network = train_network(clips, features, dev_idx, labels, config)
    trained_on = f"{Path(args.manifest).resolve().parent.name}: {len(dev_idx)} clips, {len(dev_speakers)} speakers"
    checkpoint = make_checkpoint(
        network,
        labels=labels,
        mel=config.mel,
        architecture=config.architecture(),
        temperature=temperature,
        version=args.version or f"{Path(args.manifest).resolve().parent.name}-cnn-1.0",
        licence=args.licence,
        commercial_use=args.commercial_use,
        trained_on=trained_on,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out / MODEL_FILE)

    report: dict[str, Any] = {
        "manifest": str(args.manifest),
        "labels": labels,
        "config": {k: (v if not isinstance(v, MelConfig) else repr(v)) for k, v in vars(config).items()},
        "train_speakers": dev_speakers,
        "test_speakers": sorted(test_speakers),
        "temperature": temperature,
        "inner_validation": {
            "folds": val_report,
            "calibrated": inner,
            # Kept so other calibration methods can be compared without retraining.
            "logits": np.round(np.concatenate(val_logits), 4).tolist(),
            "y": np.concatenate(val_y).tolist(),
        },
    }
    # 3. Held-out speakers: single clip (what /analyze does) and same speaker (batch / session).
    if test_speakers:
        test_idx = indices(test_speakers)
        for mode, same in (("single_clip", False), ("same_speaker", True)):
            z = network_logits(network, clips, features, test_idx, same_speaker=same)
            report[f"test_{mode}"] = metrics(softmax(z, temperature), y[test_idx], labels)
            report[f"test_{mode}_uncalibrated_ece"] = metrics(softmax(z), y[test_idx], labels)["ece"]
            report[f"test_{mode}_logits"] = np.round(z, 4).tolist()
        report["test_y"] = y[test_idx].tolist()
        try:
            report["test_baseline_mfcc_lr_ua"] = baseline_ua(clips, features, dev_idx, test_idx, labels)
        except ImportError:  # scikit-learn is a dev extra; the baseline is only a sanity figure
            logger.warning("scikit-learn is not installed: the MFCC + logistic-regression baseline is skipped")
            report["test_baseline_mfcc_lr_ua"] = None
        logger.info(
            "held-out single-clip UA %.3f, same-speaker UA %.3f, baseline UA %s",
            report["test_single_clip"]["ua"],
            report["test_same_speaker"]["ua"],
            report["test_baseline_mfcc_lr_ua"],
        )

    # 4. Speaker-independent k-fold cross-validation over all speakers (the recipe, not this file).
    if args.folds > 1:
        all_speakers = sorted({c.speaker for c in clips})
        # Contiguous blocks of the sorted speaker names (RAVDESS: odd actors male, even female).
        cv_folds = [list(map(str, block)) for block in np.array_split(all_speakers, min(args.folds, len(all_speakers)))]
        single, same, fold_ua = [], [], []
        cv_y = []
        for k, fold in enumerate(cv_folds):
            logger.info("cross-validation fold %d/%d: test speakers %s", k + 1, len(cv_folds), ", ".join(fold))
            fold_net = train_network(clips, features, indices(set(all_speakers) - set(fold)), labels, config)
            fold_idx = indices(set(fold))
            z = network_logits(fold_net, clips, features, fold_idx)
            single.append(z)
            same.append(network_logits(fold_net, clips, features, fold_idx, same_speaker=True))
            cv_y.append(y[fold_idx])
            fold_ua.append(metrics(softmax(z, temperature), y[fold_idx], labels)["ua"])
        report["cross_validation"] = {
            "folds": [{"speakers": f, "single_clip_ua": u} for f, u in zip(cv_folds, fold_ua, strict=True)],
            "single_clip": metrics(softmax(np.concatenate(single), temperature), np.concatenate(cv_y), labels),
            "same_speaker": metrics(softmax(np.concatenate(same), temperature), np.concatenate(cv_y), labels),
        }

    report["training_seconds"] = time.perf_counter() - started
    report["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads"
    )
    report["model_file_bytes"] = (out / MODEL_FILE).stat().st_size
    report["model_version"] = BundledModel.load(str(out / MODEL_FILE)).info.version
    report["command"] = shlex.join(["python", "-m", "emotion_service.train", *sys.argv[1:]])
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_card(report, out / "MODEL_CARD.md", licence=args.licence)
    logger.info("wrote %s, metrics.json and MODEL_CARD.md in %.0f s", out / MODEL_FILE, report["training_seconds"])
    return report


# --------------------------------------------------------------------------------------------
# The model card


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _metrics_table(m: dict[str, Any]) -> list[str]:
    labels = m["labels"]
    lines = ["| true \\ predicted | " + " | ".join(labels) + " | recall |", "|---" * (len(labels) + 2) + "|"]
    for i, label in enumerate(labels):
        recall = m["per_class_recall"].get(label)
        cells = " | ".join(str(v) for v in m["confusion"][i])
        lines.append(f"| **{label}** | {cells} | {_pct(recall) if recall is not None else '-'} |")
    return lines


def render_card(report: dict[str, Any], licence: str) -> str:
    """MODEL_CARD.md text from a ``metrics.json`` report."""
    cfg = report["config"]
    lines = [
        "# Bundled emotion model",
        "",
        f"Version `{report['model_version']}`; written by `{report['command']}`.",
        "",
        "A small log-mel CNN (4 conv blocks, attentive mean/std pooling over time) that ships in the",
        "repository and is the offline default (`presets.default`). It runs on CPU through the same",
        "`EmotionModel` interface as the hub models; probabilities are temperature-calibrated.",
        "",
        "## Data and licence",
        "",
        f"- Manifest: `{report['manifest']}`; labels: {', '.join(report['labels'])}.",
        f"- Trained on speakers {', '.join(report['train_speakers'])}.",
        "- Held out for the report only (never used to choose anything): "
        + (", ".join(report["test_speakers"]) or "none")
        + ".",
        f"- Licence of the weights: **{licence}**.",
    ]
    if licence == DEFAULT_LICENCE:
        lines += [
            "- RAVDESS (Livingstone & Russo, 2018, PLoS ONE 13(5): e0196391) is licensed CC BY-NC-SA 4.0:",
            "  these weights are for non-commercial use. To deploy commercially, retrain in one step on data",
            "  you hold rights to: `python -m emotion_service.train fit --manifest your/manifest.csv --out DIR`",
            "  (columns path, speaker, emotion) and point `models.bundled.source` at `DIR`.",
            "- RAVDESS is acted, read English speech (24 North-American actors, 2 sentences, studio microphone).",
            "  Spontaneous interview speech, other languages (e.g. Mandarin) and other microphones will score",
            "  lower than the figures below; treat them as an upper bound.",
        ]
    else:
        lines += ["- To retrain: `python -m emotion_service.train fit --manifest your/manifest.csv --out DIR`."]
    lines += [
        "",
        "## Recipe",
        "",
        "- Features: 64-band log-mel (25 ms / 10 ms), leading/trailing silence trimmed, normalised per clip",
        "  (single-clip mode, `/analyze`) or over all clips of the speaker (`same_speaker=True`, batch and",
        "  session analysis). The model is trained on both normalisations.",
        f"- Training: {cfg['epochs']} epochs, AdamW one-cycle lr {cfg['learning_rate']}, batch {cfg['batch_size']},"
        f" random {cfg['crop_frames']}-frame crops, class-balanced loss, label smoothing {cfg['label_smoothing']},"
        f" mixup alpha {cfg['mixup']}, SpecAugment, seed {cfg['seed']}.",
        f"- Augmentation: {cfg['n_augment']} degraded copies per clip (speed 0.9-1.1, synthetic reverberation,"
        " high/low-pass microphone colouring, 8 kHz telephone band, coloured noise at 10-35 dB SNR, gain);"
        f" {_pct(1 - cfg['clean_share'])} of training examples use a degraded copy.",
        f"- Calibration: temperature {report['temperature']:.3f}, fitted (NLL) on speaker-independent inner"
        " validation folds of the training speakers: "
        + "; ".join(", ".join(f["speakers"]) for f in report["inner_validation"]["folds"])
        + f" (calibrated inner-validation UA {_pct(report['inner_validation']['calibrated']['ua'])},"
        f" ECE {report['inner_validation']['calibrated']['ece']:.3f}).",
        f"- Training time: {report['training_seconds'] / 60:.1f} min on {report['machine']}.",
        f"- Model file: {report['model_file_bytes'] / 1e6:.2f} MB (torch state dict, loaded with `weights_only=True`).",
        "",
    ]
    if "test_single_clip" in report:
        single, same = report["test_single_clip"], report["test_same_speaker"]
        lines += [
            "## Held-out speakers " + ", ".join(report["test_speakers"]),
            "",
            "UA = unweighted accuracy (mean of per-class recall); WA = accuracy; ECE = expected calibration",
            "error of the top label's confidence, 10 equal-width bins.",
            "",
            "| mode | UA | WA | ECE | clips |",
            "|---|---|---|---|---|",
            f"| **single clip** (per-clip normalisation; what `/analyze` does) | **{_pct(single['ua'])}** |"
            f" {_pct(single['wa'])} | {single['ece']:.3f} | {single['clips']} |",
            f"| same speaker (per-speaker normalisation over the speaker's clips; batch / session) |"
            f" {_pct(same['ua'])} | {_pct(same['wa'])} | {same['ece']:.3f} | {same['clips']} |",
            "",
            f"Uncalibrated single-clip ECE: {report['test_single_clip_uncalibrated_ece']:.3f}."
            f" Plain baseline (MFCC statistics + logistic regression, same split): UA"
            f" {'n/a' if report['test_baseline_mfcc_lr_ua'] is None else _pct(report['test_baseline_mfcc_lr_ua'])}.",
            "",
            "Confusion matrix, single clip:",
            "",
            *_metrics_table(single),
            "",
            "Confusion matrix, same speaker:",
            "",
            *_metrics_table(same),
            "",
        ]
    if "cross_validation" in report:
        cv = report["cross_validation"]
        lines += [
            f"## Speaker-independent cross-validation ({len(cv['folds'])} folds over all speakers)",
            "",
            "The same recipe trained once per fold without the fold's speakers (this measures the recipe;",
            "the shipped file is the model above)."
            + ("" if cv.get("note") else " Temperature of the shipped model applied."),
            "",
            f"- single clip: UA **{_pct(cv['single_clip']['ua'])}**, WA {_pct(cv['single_clip']['wa'])},"
            f" ECE {cv['single_clip']['ece']:.3f}",
            f"- same speaker: UA {_pct(cv['same_speaker']['ua'])}, WA {_pct(cv['same_speaker']['wa'])},"
            f" ECE {cv['same_speaker']['ece']:.3f}",
            "- per fold (single clip UA): "
            + "; ".join(f"{'/'.join(f['speakers'])}: {_pct(f['single_clip_ua'])}" for f in cv["folds"]),
            "",
        ]
        if cv.get("note"):
            lines += [cv["note"], ""]
    lines += [
        "## Reproduce and check",
        "",
        "```",
        report["command"],
        "python -m emotion_service.train evaluate --model emotion_service/resources/bundled/model.pt \\",
        "    --manifest ../shared/data/ravdess/manifest.csv --speakers "
        + ",".join(report["test_speakers"])
        + "   # last line: JSON",
        "python bench/bench_bundled.py   # real-time factor on this machine",
        "```",
        "",
        "All numbers here are in `metrics.json` next to this card.",
        "",
    ]
    extra = report.get("card_notes")
    if extra:
        lines += ["## Notes", "", *extra, ""]
    return "\n".join(lines)


def write_card(report: dict[str, Any], path: Path, licence: str) -> None:
    path.write_text(render_card(report, licence), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The evaluate command


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Score a saved model on a manifest (optionally a subset of its speakers)."""
    torch.set_num_threads(args.threads)
    model = BundledModel.load(args.model)
    clips = read_manifest(args.manifest)
    if args.speakers:
        chosen = select_speakers(clips, args.speakers)
        clips = [c for c in clips if c.speaker in chosen]
    labels = list(model.labels)
    known = [c for c in clips if c.label in labels]
    if len(known) < len(clips):
        logger.warning("%d clips have labels the model cannot output and count as errors", len(clips) - len(known))
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(clip.speaker if args.same_speaker else clip.path.as_posix(), []).append(clip)
    probabilities, truth = [], []
    all_labels = labels + sorted({c.label for c in clips} - set(labels))
    for group in groups.values():
        p = model.predict_proba([read_audio(c.path) for c in group], same_speaker=args.same_speaker)
        probabilities.append(np.pad(p, ((0, 0), (0, len(all_labels) - len(labels)))))
        truth += [all_labels.index(c.label) for c in group]
    result = metrics(np.concatenate(probabilities), np.array(truth), all_labels)
    result.update(model=model.info.version, mode="same_speaker" if args.same_speaker else "single_clip")
    return result


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emotion_service.train", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit_p = commands.add_parser("fit", help="train, calibrate and evaluate a model; write it with its card")
    fit_p.add_argument(
        "--kind",
        choices=("cnn", "encoder"),
        default="cnn",
        help="cnn: the small bundled CNN (preset fast); encoder: a head on the shipped Whisper encoder",
    )
    fit_p.add_argument(
        "--manifest",
        required=True,
        action="append",
        help="CSV with path,speaker,emotion (paths relative to it); --kind encoder takes several, one per corpus",
    )
    fit_p.add_argument("--out", required=True, help="folder for model.pt, metrics.json and MODEL_CARD.md")
    fit_p.add_argument("--test-speakers", default="", help="comma list held out for the report, e.g. 21,22,23,24")
    fit_p.add_argument("--folds", type=int, default=6, help="speaker-independent cross-validation folds (0: skip)")
    fit_p.add_argument(
        "--inner-folds",
        type=int,
        default=None,
        help="validation folds for the calibration temperature (cnn 1, encoder 4)",
    )
    fit_p.add_argument("--seed", type=int, default=0)
    fit_p.add_argument("--epochs", type=int, default=None, help="default: cnn 60, encoder 20")
    fit_p.add_argument("--augment", type=int, default=None, help="degraded copies per clip (default: cnn 4, encoder 2)")
    fit_p.add_argument("--mixup", type=float, default=TrainConfig.mixup, help="mixup alpha (0: off)")
    fit_p.add_argument("--clean-share", type=float, default=TrainConfig.clean_share, help="share of clean examples")
    fit_p.add_argument("--device", default="cpu", help="torch device for training (cpu reproduces the shipped file)")
    fit_p.add_argument("--workers", type=int, default=2, help="processes for feature extraction")
    fit_p.add_argument("--width", type=int, default=TrainConfig.width, help="channels of the first conv block")
    fit_p.add_argument(
        "--version", default="", help="model version tag (default <corpus folder>-cnn-1.0; a file hash is appended)"
    )
    fit_p.add_argument("--licence", default=DEFAULT_LICENCE, help="licence of the weights (that of the data)")
    fit_p.add_argument("--commercial-use", action="store_true", help="the data allows commercial use")
    fit_p.add_argument("--no-cache", action="store_true", help="do not cache features in ~/.cache/emotion_service")
    fit_p.add_argument("--threads", type=int, default=2)
    fit_p.add_argument("--encoder", default=str(SHIPPED_ENCODER), help="encoder folder (--kind encoder)")
    fit_p.add_argument("--depth", type=int, default=6, help="encoder layers the head reads (--kind encoder)")
    fit_p.add_argument("--hidden", type=int, default=256, help="hidden units of the head (--kind encoder)")
    fit_p.add_argument(
        "--members",
        type=int,
        default=HeadConfig.members,
        help="heads trained from successive seeds that answer as one, their logits averaged (--kind encoder)",
    )
    fit_p.add_argument("--attribution", default="", help="attribution the data's licence asks for (--kind encoder)")
    fit_p.add_argument("--copy-encoder", action="store_true", help="copy the encoder beside the head (--kind encoder)")
    fit_p.add_argument(
        "--speech-share",
        type=float,
        default=HeadConfig.speech_share,
        help="share of training examples with their silences cut, as MODEL_INPUT=speech serves them (--kind encoder; 0: off)",
    )
    fit_p.add_argument(
        "--baseline",
        choices=("labels", "mean"),
        default=HeadConfig.baseline,
        help="a speaker's baseline: the mean of the centroids of the emotions heard, each weighing the same"
        " (labels), or the plain mean of their clips (mean; the 1.1 heads) (--kind encoder)",
    )
    fit_p.add_argument(
        "--baseline-path",
        choices=("alone", "combined", "residual"),
        default=HeadConfig.relative_loss,
        help="the baseline path learns to classify by itself (alone), that and its sum with the clip path"
        " (combined), or a correction to the clip path (residual; the 1.1 heads) (--kind encoder)",
    )
    fit_p.add_argument(
        "--baseline-reads",
        choices=RELATIVE_READS,
        default=HeadConfig.reads,
        help="the baseline path reads how the clip differs from the baseline (difference) or the clip too"
        " (both; the 1.1 and 1.2 heads) (--kind encoder)",
    )
    fit_p.add_argument(
        "--max-baseline",
        type=int,
        default=HeadConfig.max_baseline,
        help="most clips in a baseline drawn in training (--kind encoder)",
    )
    fit_p.add_argument(
        "--baseline-sizes",
        choices=BASELINE_SIZES,
        default=HeadConfig.baseline_sizes,
        help="sizes of the baselines drawn in training, from 1 to --max-baseline: uniform, or log-uniform (log)"
        " (--kind encoder)",
    )
    fit_p.add_argument(
        "--reuse-head",
        default="",
        metavar="DIR",
        help="keep the network of the head in DIR, trained by this same command (its metrics.json says so),"
        " and choose only its baseline rule and temperatures afresh on the inner folds (--kind encoder)",
    )
    ev = commands.add_parser("evaluate", help="score a saved model; the last line printed is JSON")
    ev.add_argument("--model", required=True, help="model.pt or its folder, or an encoder head's folder (head.pt)")
    ev.add_argument("--manifest", required=True, action="append", help="one or more (encoder heads) manifests")
    ev.add_argument("--encoder", default=str(SHIPPED_ENCODER), help="encoder folder of a head")
    ev.add_argument("--quantize", choices=("none", "int8", "bf16"), default="none", help="int8 or bf16 encoder (heads)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the sessions drawn for the baseline modes (heads)")
    ev.add_argument(
        "--speech-only", action="store_true", help="cut silences with the energy VAD before the model (heads)"
    )
    ev.add_argument("--speakers", default="", help="comma list of speakers to score (default: all)")
    ev.add_argument("--same-speaker", action="store_true", help="normalise over each speaker's clips")
    ev.add_argument("--threads", type=int, default=2)
    card = commands.add_parser("card", help="rewrite MODEL_CARD.md from a metrics.json")
    card.add_argument("--metrics", required=True)
    card.add_argument("--licence", default=DEFAULT_LICENCE)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.command == "fit":
        encoder = args.kind == "encoder"
        args.inner_folds = (4 if encoder else 1) if args.inner_folds is None else args.inner_folds
        args.epochs = (HeadConfig.epochs if encoder else TrainConfig.epochs) if args.epochs is None else args.epochs
        args.augment = (2 if encoder else TrainConfig.n_augment) if args.augment is None else args.augment
    if args.command == "fit" and args.kind == "encoder":
        report = encoder_training.fit(args)
        print(
            json.dumps(
                {
                    k: {c: {m: v[c][m] for m in ("ua", "ece", "clips")} for c in v}
                    for k, v in report.get("test", {}).items()
                }
            )
        )
        return 0
    if args.command == "evaluate" and (Path(args.model) / "head.pt").is_file():
        print(json.dumps(encoder_training.evaluate(args)))
        return 0
    if args.command == "card":
        metrics_file = Path(args.metrics)
        report = json.loads(metrics_file.read_text("utf-8"))
        if report.get("kind") == "encoder":
            (metrics_file.parent / "MODEL_CARD.md").write_text(encoder_training.render_card(report), encoding="utf-8")
        else:
            write_card(report, metrics_file.parent / "MODEL_CARD.md", args.licence)
        return 0
    if len(args.manifest) != 1:
        raise SystemExit("the CNN trains and evaluates on one manifest; pass one --manifest (or --kind encoder)")
    args.manifest = args.manifest[0]
    if args.command == "fit":
        report = fit(args)
        summary = {k: report[k] for k in ("test_single_clip", "test_same_speaker") if k in report}
        print(json.dumps({k: {m: v[m] for m in ("ua", "wa", "ece", "clips")} for k, v in summary.items()}))
    else:
        print(json.dumps(evaluate(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
