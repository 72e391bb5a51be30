"""The bundled model: a small log-mel CNN that ships in the repository and needs no download.

The model file is a plain torch state dict plus its settings (labels, log-mel parameters,
calibration temperature), read with ``torch.load(weights_only=True)`` so loading it never runs
code. It is written by ``python -m emotion_service.train fit`` (see that module).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..audio.features import MelConfig, clip_features, normalise
from ..config import SAMPLING_RATE
from ..labels import CANONICAL_LABELS
from .base import EmotionModel, ModelInfo, ModelOutput, require_sampling_rate

MODEL_FILE = "model.pt"
FORMAT = "emotion-service-bundled/1"
RETRAIN_HINT = (
    "retrain it with `python -m emotion_service.train fit --manifest <manifest.csv> "
    "--out emotion_service/resources/bundled` (see emotion_service/resources/bundled/MODEL_CARD.md)"
)


def default_model_path() -> Path:
    """The model file shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "resources" / "bundled" / MODEL_FILE


class EmotionCNN(nn.Module):
    """Four conv blocks over (mel, time), then attentive mean/std pooling over time.

    Convolution over frequency as well as time keeps the features roughly invariant to pitch
    shifts between speakers; pooling over time accepts clips of any length.
    """

    def __init__(self, n_classes: int, n_mels: int = 64, width: int = 24, dropout: float = 0.3) -> None:
        super().__init__()
        channels = (width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        previous = 1
        for c in channels:
            layers += [
                nn.Conv2d(previous, c, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            previous = c
        self.features = nn.Sequential(*layers)
        self.attention = nn.Sequential(nn.Conv1d(previous, previous // 2, 1), nn.Tanh(), nn.Conv1d(previous // 2, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * previous, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) normalised log-mels -> (batch, 2 * channels) pooled features."""
        h = self.features(x.unsqueeze(1)).mean(dim=2)  # (batch, channels, frames / 16)
        weights = torch.softmax(self.attention(h), dim=2)
        mean = (h * weights).sum(dim=2)
        var = ((h - mean.unsqueeze(2)) ** 2 * weights).sum(dim=2)
        return torch.cat([mean, torch.sqrt(var + 1e-5)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> logits (batch, n_classes); frames must be at least 16."""
        return self.classifier(self.dropout(self.embed(x)))


MIN_FRAMES = 16  # four 2x poolings
MAX_FRAMES = 3000  # 30 s


def pad_frames(features: np.ndarray, frames: int = MIN_FRAMES) -> np.ndarray:
    """Repeat a very short clip until the network can pool it."""
    if features.shape[1] >= frames:
        return features
    return np.tile(features, (1, -(-frames // features.shape[1])))[:, :frames]


def file_version(path: Path, tag: str) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return f"{tag}+{digest}"


class BundledModel(EmotionModel):
    """The shipped CNN behind the common :class:`EmotionModel` interface."""

    def __init__(
        self,
        network: EmotionCNN,
        labels: Sequence[str],
        mel: MelConfig,
        temperature: float,
        info: ModelInfo,
    ) -> None:
        self.network = network.eval()
        self.labels = tuple(labels)
        self.mel = mel
        self.temperature = float(temperature)
        self.info = info

    @classmethod
    def load(cls, path: str | None = None, *, device: str = "cpu") -> BundledModel:
        """Load a model file written by ``python -m emotion_service.train fit``.

        Args:
            path: The model file, or a folder holding ``model.pt``; None for the shipped one.
            device: Torch device; the model is small, so "cpu" is the sensible choice.

        Raises:
            FileNotFoundError: There is no model file.
            RuntimeError: The file is not a bundled-model file or is damaged.
        """
        file = Path(path) if path else default_model_path()
        if file.is_dir():
            file = file / MODEL_FILE
        if not file.is_file():
            raise FileNotFoundError(f"bundled model file {file} is missing; {RETRAIN_HINT}")
        try:
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise RuntimeError(f"bundled model file {file} cannot be read ({exc}); {RETRAIN_HINT}") from exc
        network, settings = network_from_checkpoint(checkpoint, file)
        # channels-last: max-pooling, half the network's time in the default layout, runs ~2x faster
        # (same outputs within 1e-7; bench/bench_engine.py).
        network = fuse_batch_norm(network).to(device, memory_format=torch.channels_last)
        info = ModelInfo(
            name="bundled",
            display_name="Bundled",
            source=str(file),
            version=file_version(file, settings["version"]),
            licence=settings["licence"],
            labels=tuple(settings["labels"]),
            device=device,
            commercial_use=bool(settings["commercial_use"]),
            extra={
                "architecture": f"log-mel CNN, {sum(p.numel() for p in network.parameters())} parameters",
                "trained_on": settings["trained_on"],
                "temperature": f"{settings['temperature']:.3f}",
                "card": str(file.parent / "MODEL_CARD.md"),
            },
        )
        return cls(network, settings["labels"], settings["mel"], settings["temperature"], info)

    def logits(self, signals: Sequence[np.ndarray], *, same_speaker: bool = False) -> np.ndarray:
        """Uncalibrated logits (clips, labels) of 16 kHz signals."""
        features = normalise([clip_features(s, self.mel) for s in signals], same_speaker=same_speaker)
        device = next(self.network.parameters()).device
        rows = []
        with torch.inference_mode():
            # One clip at a time: no padding, so a clip's score never depends on its neighbours.
            for f in features:
                # Long recordings go through in windows of at most 30 s (memory stays small); their
                # logits are averaged, weighted by length.
                windows = np.array_split(f, -(-f.shape[1] // MAX_FRAMES), axis=1)
                logits = [self.network(torch.from_numpy(pad_frames(w)).unsqueeze(0).to(device))[0] for w in windows]
                weights = torch.tensor([w.shape[1] for w in windows], dtype=torch.float32, device=device)
                rows.append(((torch.stack(logits) * weights[:, None]).sum(0) / weights.sum()).float().cpu().numpy())
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict_proba(self, signals: Sequence[np.ndarray], *, same_speaker: bool = False) -> np.ndarray:
        """Calibrated probabilities (clips, labels), in the order of ``self.labels``."""
        z = self.logits(signals, same_speaker=same_speaker) / self.temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def process_signals(
        self,
        signals: Sequence[np.ndarray],
        sampling_rate: int = SAMPLING_RATE,
        *,
        same_speaker: bool = False,
    ) -> list[ModelOutput]:
        require_sampling_rate(sampling_rate, self.info.display_name)
        probabilities = self.predict_proba(signals, same_speaker=same_speaker)
        return [
            ModelOutput({label: float(p) for label, p in zip(self.labels, row, strict=True)}) for row in probabilities
        ]


def fuse_batch_norm(network: EmotionCNN) -> EmotionCNN:
    """Fold each eval-mode batch norm into the convolution before it (same outputs, faster)."""
    layers = list(network.features)
    fused: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, nn.BatchNorm2d) and fused and isinstance(fused[-1], nn.Conv2d):
            fused[-1] = fuse_conv_bn_eval(fused[-1], layer)
        else:
            fused.append(layer)
    network.features = nn.Sequential(*fused)
    return network.eval()


def network_from_checkpoint(checkpoint: Any, file: Path | str = "model file") -> tuple[EmotionCNN, dict[str, Any]]:
    """Rebuild the network from a checkpoint dict and return it with its settings."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise RuntimeError(f"{file} is not a bundled emotion model ({FORMAT}); {RETRAIN_HINT}")
    labels = list(checkpoint["labels"])
    unknown = [label for label in labels if label not in CANONICAL_LABELS]
    if unknown:
        raise RuntimeError(f"{file} has labels outside the canonical set: {unknown}; {RETRAIN_HINT}")
    mel = MelConfig(**checkpoint["mel"])
    network = EmotionCNN(len(labels), n_mels=mel.n_mels, **checkpoint["architecture"])
    try:
        network.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise RuntimeError(f"{file} has weights that do not fit the network ({exc}); {RETRAIN_HINT}") from exc
    settings = {
        "labels": labels,
        "mel": mel,
        "temperature": float(checkpoint["temperature"]),
        "version": str(checkpoint["version"]),
        "licence": str(checkpoint["licence"]),
        "commercial_use": bool(checkpoint["commercial_use"]),
        "trained_on": str(checkpoint["trained_on"]),
    }
    return network.eval(), settings


def make_checkpoint(
    network: EmotionCNN,
    *,
    labels: Sequence[str],
    mel: MelConfig,
    architecture: dict[str, Any],
    temperature: float,
    version: str,
    licence: str,
    commercial_use: bool,
    trained_on: str,
) -> dict[str, Any]:
    """Everything :meth:`BundledModel.load` needs, as plain tensors and primitives."""
    return {
        "format": FORMAT,
        "labels": list(labels),
        "mel": asdict(mel),
        "architecture": dict(architecture),
        "temperature": float(temperature),
        "version": version,
        "licence": licence,
        "commercial_use": bool(commercial_use),
        "trained_on": trained_on,
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
    }
