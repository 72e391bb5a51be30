"""The encoder model: Whisper's frozen encoder under a small trained emotion head.

A clip goes through the encoder at its real length (:mod:`.whisper_encoder`); the mean and
standard deviation of each hidden state over the clip's frames, standardised with the training
statistics, feed :class:`EmotionHead`: a learned weighting of the hidden states and a small MLP.

The head has two paths. The *clip* path reads the clip alone. The *baseline* path reads how the
clip differs from the speaker's usual voice (heads before 1.3 also read the clip there). That voice is not the plain mean of the speaker's
clips, which a session that is mostly angry would make angry, but :func:`balanced_baseline`: the
mean of the centroids of the emotions the clip path hears in the speaker's clips, each emotion
weighing the same however often it was heard, shrunk towards the population so that a baseline of
one or two clips says little. The baseline path was trained to classify by itself, on baselines
drawn from random subsets of a speaker's clips, half of them sessions where one emotion dominates;
served, its logits are added to the clip path's, scaled by ``baseline_weight``, reached at
``baseline_full_at`` clips and ramped up to it linearly before (:func:`ramped_weight`: a young
baseline is noisier, most of all in a session that leans one way). Both are chosen on inner folds so
that neither balanced sessions nor those where one emotion dominates, of 5 clips to all the
speaker's, score worse than their clips alone. Below ``min_baseline`` clips the clip path answers. Heads of the 1.1 design
use the plain mean, their baseline path trained as a correction to the clip path
(``HeadCheckpoint.baseline == "mean"``); both designs load and serve. A checkpoint may hold several
heads trained alike from successive seeds (:class:`HeadEnsemble`; a single head is an ensemble of
one): their logits are averaged, and the baseline is formed from their mean clip probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import SAMPLING_RATE
from .base import BaselineStats, EmotionModel, ModelInfo, ModelOutput, require_sampling_rate
from .whisper_encoder import CALIBRATION_FILE, Int8Calibration, WhisperEncoder, windows

logger = logging.getLogger(__name__)

HEAD_FILE = "head.pt"
BATCH_SECONDS = 60.0  # audio per encoder forward pass (bounds its memory)
ENCODER_FOLDER = "encoder"  # in a head's folder: the encoder it was trained on, unless shipped elsewhere


def shipped(path: str) -> Path:
    """A folder given in ``models.toml``: absolute or relative to the working directory if it
    exists there, else one of the package's shipped resources (``emotion_service/resources``)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return Path(__file__).resolve().parent.parent / "resources" / path


RELATIVE_READS = ("both", "difference")  # what the baseline path reads: [clip, clip - baseline] or the difference


class EmotionHead(nn.Module):
    """Hidden states weighted and concatenated → clip logits; plus the baseline path's logits.

    Each hidden state's statistics are scaled by a learned weight (softmax over the states, times
    their number) and the states are concatenated. The clip path is an MLP on that. The baseline
    path is an MLP on how the clip differs from the speaker's baseline (``reads="difference"``),
    or on the clip and that difference (``"both"``, heads before 1.3); its logits are added to the
    clip path's, so that the head falls back on the clip alone without a baseline.
    """

    def __init__(
        self,
        states: int,
        width: int,
        classes: int,
        hidden: int = 256,
        dropout: float = 0.3,
        reads: str = "both",
    ) -> None:
        super().__init__()
        if reads not in RELATIVE_READS:
            raise ValueError(f"reads must be one of {RELATIVE_READS}, got {reads!r}")
        self.reads = reads
        self.layer_logits = nn.Parameter(torch.zeros(states))
        size = states * width
        self.clip = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(size, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
        )
        self.relative = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(size if reads == "difference" else 2 * size, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def weighted(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """``(..., states, width)`` → ``(..., states * width)``, each state scaled by its learned weight
        (``detach``: without passing gradients to those weights)."""
        layer_logits = self.layer_logits.detach() if detach else self.layer_logits
        weights = torch.softmax(layer_logits, 0) * len(layer_logits)
        return (x * weights[:, None]).flatten(-2)

    def clip_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The clip path's probabilities of ``(..., states, width)`` clips, ``(..., labels)``."""
        return torch.softmax(self.clip(self.weighted(x)), dim=-1)

    def class_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-label sums of ``(..., clips, states, width)`` clips weighted by the clip path's
        probabilities of each label, ``(..., labels, states, width)``, and those probabilities'
        sums, ``(..., labels)``."""
        return label_sums(self.clip_probabilities(x), x)

    def relative_logits(self, x: torch.Tensor, baseline: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """The baseline path alone: logits from the clip and how it differs from ``baseline``
        (``detach``: its loss leaves the states' weights, which the clip path learns, alone)."""
        v = self.weighted(x, detach)
        difference = v - self.weighted(baseline, detach)
        return self.relative(difference if self.reads == "difference" else torch.cat([v, difference], dim=-1))

    def project(self, baseline: torch.Tensor) -> torch.Tensor:
        """What the baseline path reads of a baseline: ``(..., states, width)`` → ``(..., hidden)``.

        A baseline enters the path only through this linear map, so a speaker's statistics can be
        kept projected (a few kB instead of every state's sums) and :meth:`relative_from_projection`
        gives the same logits as :meth:`relative_logits`.
        """
        first = self.relative[1]
        b = self.weighted(baseline)
        return b @ first.weight[:, first.in_features - b.shape[-1] :].T  # the columns that read b

    def relative_from_projection(self, x: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        """:meth:`relative_logits` from a projected baseline (evaluation: no dropout)."""
        v = self.weighted(x)
        # The first layer reads [v, v - b] (or v - b): on [v, v] (or v), less what it reads of b.
        hidden = self.relative[1](v if self.reads == "difference" else torch.cat([v, v], dim=-1)) - projected
        return self.relative[4](self.relative[2](hidden))

    def forward(self, x: torch.Tensor, baseline: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
        """Logits of ``(clips, states, width)`` standardised features.

        Args:
            x: The clips' features.
            baseline: The speaker's shrunk baseline mean for each clip, same shape; None: clip path.
            weight: How much of the baseline path's correction is added (1 as trained; the
                checkpoint's ``baseline_weight`` is chosen on inner folds).
        """
        logits = self.clip(self.weighted(x))
        if baseline is None:
            return logits
        return logits + weight * self.relative_logits(x, baseline)


def label_sums(probabilities: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., clips, states, width)`` clips summed per label, each weighted by its ``(..., clips,
    labels)`` probabilities, and those probabilities' sums."""
    return torch.einsum("...mc,...msw->...csw", probabilities, x), probabilities.sum(dim=-2)


class HeadEnsemble(nn.Module):
    """Heads trained alike from different seeds, answering as one: their logits averaged.

    The members read the same standardised features. A speaker's baseline is formed once, from
    the members' mean clip probabilities (a better guess at which emotion each clip shows than one
    member's), and each member's baseline path reads it; projected, the members' projections lie
    side by side, ``(..., members * hidden)``. One member is a plain :class:`EmotionHead`.
    """

    def __init__(self, members: Sequence[EmotionHead]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one head")
        self.members = nn.ModuleList(members)

    def _each(self) -> list[EmotionHead]:
        return list(self.members)  # type: ignore[arg-type]

    def layer_weights(self) -> torch.Tensor:
        """The members' mean weighting of the hidden states (softmax of each one's ``layer_logits``)."""
        return torch.stack([torch.softmax(m.layer_logits.detach(), 0) for m in self._each()]).mean(dim=0)

    def clip_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The members' mean clip probabilities (:meth:`EmotionHead.clip_probabilities`)."""
        return torch.stack([m.clip_probabilities(x) for m in self._each()]).mean(dim=0)

    def class_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`EmotionHead.class_statistics` with the members' mean clip probabilities."""
        return label_sums(self.clip_probabilities(x), x)

    def relative_logits(self, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.relative_logits(x, baseline) for m in self._each()]).mean(dim=0)

    def project(self, baseline: torch.Tensor) -> torch.Tensor:
        """Each member's :meth:`EmotionHead.project`, side by side: ``(..., members * hidden)``."""
        return torch.cat([m.project(baseline) for m in self._each()], dim=-1)

    def relative_from_projection(self, x: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        parts = projected.chunk(len(self.members), dim=-1)
        logits = [m.relative_from_projection(x, p) for m, p in zip(self._each(), parts, strict=True)]
        return torch.stack(logits).mean(dim=0)

    def forward(self, x: torch.Tensor, baseline: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
        """The members' mean :meth:`EmotionHead.forward`."""
        return torch.stack([m(x, baseline, weight) for m in self._each()]).mean(dim=0)


LABEL_PRIOR = 1.0  # pseudo-clips added to each label's mass in a balanced baseline


def ramped_weight(weight: float, full_at: int, clips: int) -> float:
    """How much of the baseline path is added for a baseline of ``clips`` clips: ``weight`` from
    ``full_at`` clips on, ``weight * clips / full_at`` before (``full_at`` 0: ``weight`` always)."""
    if full_at <= 0:
        return weight
    return weight * min(1.0, clips / full_at)


def ramped_temperature(clip: float, whole: float, full_at: int, clips: int) -> float:
    """The temperature of logits against a baseline of ``clips`` clips: ``whole`` (fitted at the
    baseline path's whole weight) from ``full_at`` clips on, moving there from the clip path's
    ``clip`` as the weight does (:func:`ramped_weight`): one temperature would leave the young
    baselines' logits, which hold little of the path, underconfident and the old ones' overconfident."""
    return clip + (whole - clip) * ramped_weight(1.0, full_at, clips)


def balanced_baseline(
    sums: torch.Tensor, mass: torch.Tensor, shrink: float, prior: float = LABEL_PRIOR, feature_dims: int = 2
) -> torch.Tensor:
    """A speaker's baseline in which each emotion heard weighs the same, however often it was heard.

    The mean of the per-label centroids ``sums / mass`` (from :meth:`EmotionHead.class_statistics`),
    each weighted by ``mass / (mass + prior)`` (a label heard in a fraction of one clip counts for
    little), shrunk towards the population (0) by ``shrink``. A session that is 70% angry then does
    not make anger the speaker's usual voice.
    """
    expand = (..., *([None] * feature_dims))
    share = mass / (mass + prior)
    centroids = (sums / (mass + prior)[expand]).sum(dim=-1 - feature_dims)
    return centroids / (share.sum(dim=-1) + shrink)[expand]


def speaker_baselines(
    head: EmotionHead | HeadEnsemble,
    x: torch.Tensor,
    owner: torch.Tensor,
    sessions: int,
    kind: str,
    shrink: float,
) -> torch.Tensor:
    """The baselines of ``sessions`` speakers' sessions, ``(sessions, states, width)``, from their
    clips listed flat: ``x`` ``(clips, states, width)``, ``owner`` ``(clips,)`` the session of each
    (sessions of any sizes go together, none padded to the longest).

    ``kind`` ``labels``: :func:`balanced_baseline` of the clip path's per-label statistics;
    ``mean``: the clips' mean, shrunk towards the population by ``shrink`` pseudo-clips.
    """
    if kind == "labels":
        probabilities = head.clip_probabilities(x)
        labels = probabilities.shape[-1]
        sums = x.new_zeros(sessions * labels, *x.shape[1:])
        for c in range(labels):
            sums.index_add_(0, owner * labels + c, probabilities[:, c, None, None] * x)
        mass = probabilities.new_zeros(sessions, labels).index_add_(0, owner, probabilities)
        return balanced_baseline(sums.view(sessions, labels, *x.shape[1:]), mass, shrink)
    sums = x.new_zeros(sessions, *x.shape[1:]).index_add_(0, owner, x)
    count = torch.bincount(owner, minlength=sessions).to(x.dtype)
    return sums / (count + shrink)[:, None, None]


@dataclass
class HeadCheckpoint:
    """Everything a head needs at run time, as saved by the trainer (``head.pt``)."""

    labels: tuple[str, ...]
    depth: int
    mean: np.ndarray  # (states, width) of the training features
    std: np.ndarray
    state: dict[str, torch.Tensor]
    hidden: int
    members: int = 1  # heads in the ensemble (state keys ``members.<k>.``)
    temperature_clip: float = 1.0
    temperature_baseline: float = 1.0  # at the baseline path's whole weight (ramped_temperature)
    shrink: float = 2.0
    min_baseline: int = 3
    baseline_weight: float = 1.0
    baseline_full_at: int = 0  # clips from which the whole baseline_weight is added (ramped_weight; 0: always)
    baseline: str = "mean"  # "mean" of the clips, or "labels": balanced_baseline
    reads: str = "both"  # what the baseline path reads (RELATIVE_READS)
    version: str = "unknown"
    licence: str = "unknown"
    commercial_use: bool = False
    attribution: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_file(self, path: Path) -> None:
        payload = {k: v for k, v in self.__dict__.items()}
        payload["mean"] = torch.from_numpy(self.mean)
        payload["std"] = torch.from_numpy(self.std)
        payload["labels"] = list(self.labels)
        # fp16 on disk halves the file; the head runs in fp32 (the difference is below 1e-3 in the logits).
        payload["state"] = {k: v.half() if v.is_floating_point() else v for k, v in self.state.items()}
        torch.save(payload, path)

    @classmethod
    def from_file(cls, path: Path) -> HeadCheckpoint:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        raw["mean"] = raw["mean"].numpy()
        raw["std"] = raw["std"].numpy()
        raw["labels"] = tuple(raw["labels"])
        raw["state"] = {k: v.float() if v.is_floating_point() else v for k, v in raw["state"].items()}
        return cls(**raw)


class EncoderModel(EmotionModel):
    """Whisper encoder + trained head, behind the common :class:`EmotionModel` interface.

    Args:
        encoder: The frozen encoder (its depth must be the head's).
        head: The head's checkpoint.
        name: Registry name.
        display_name: Shown in results.
        device: ``cpu`` or ``cuda``.
        dtype: ``fp32``, ``int8`` (CPU) or ``fp16`` (CUDA).
        source: Where the head came from (shown in /health).
    """

    def __init__(
        self,
        encoder: WhisperEncoder,
        head: HeadCheckpoint,
        *,
        name: str = "encoder",
        display_name: str = "Whisper-base encoder + emotion head",
        device: str = "cpu",
        dtype: str = "fp32",
        source: str = "",
    ) -> None:
        self.checkpoint = head
        self.labels = head.labels
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device)
        self.head = HeadEnsemble(
            [
                EmotionHead(head.depth + 1, head.mean.shape[-1], len(head.labels), head.hidden, reads=head.reads)
                for _ in range(head.members)
            ]
        )
        state = head.state
        if not any(k.startswith("members.") for k in state):  # one head, saved before ensembles
            state = {f"members.0.{k}": v for k, v in state.items()}
        self.head.load_state_dict(state)
        self.head.eval().requires_grad_(False).to(self.device)
        self.mean = torch.from_numpy(head.mean).to(self.device)
        self.std = torch.from_numpy(head.std).to(self.device)
        self.dtype = dtype
        self.info = ModelInfo(
            name=name,
            display_name=display_name,
            source=source,
            version=head.version,
            licence=head.licence,
            labels=head.labels,
            device=str(self.device),
            commercial_use=head.commercial_use,
            extra={"dtype": dtype, "attribution": head.attribution, "baseline": "candidate"},
        )

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        head_dir: str | Path,
        *,
        encoder_dir: str | Path | None = None,
        device: str = "cpu",
        quantize: str = "none",
        name: str = "encoder",
        display_name: str = "Whisper-base encoder + emotion head",
    ) -> EncoderModel:
        """Load a head folder (``head.pt``) and the encoder it was trained on.

        Args:
            head_dir: Folder with ``head.pt`` (and, unless ``encoder_dir`` is given, an ``encoder``
                folder with ``config.json`` and ``model.safetensors``).
            encoder_dir: The encoder's folder.
            device: ``cpu`` or ``cuda`` (fp16 there).
            quantize: ``int8`` quantises the encoder's linear layers on CPU, smoothed first with
                the encoder folder's :data:`~.whisper_encoder.CALIBRATION_FILE`; ``bf16`` runs
                the encoder in bfloat16 on a CPU that multiplies it natively (AVX-512 BF16 or
                AMX), else fp32 (emulated bf16 is slower).
        """
        head_dir = Path(head_dir)
        head_file = head_dir / HEAD_FILE if head_dir.is_dir() else head_dir
        if not head_file.is_file():
            raise FileNotFoundError(
                f"no {HEAD_FILE} in {head_dir}: train one with `python -m emotion_service.train fit --kind encoder`"
            )
        head = HeadCheckpoint.from_file(head_file)
        encoder_dir = Path(encoder_dir) if encoder_dir else head_file.parent / ENCODER_FOLDER
        encoder = WhisperEncoder.load(encoder_dir, depth=head.depth)
        dtype = "fp32"
        if device == "cuda":
            encoder = encoder.half()
            encoder.mel.float()  # the STFT stays fp32: cuFFT has no fp16 for 400-point transforms
            dtype = "fp16"
        elif quantize == "int8":
            from .optimize import native_vnni, quantize_int8

            # Whisper's activations have outlier channels and frames that 8 bits per tensor cannot
            # hold. Logits' cosine to fp32 on 400 held-out clips (bench/agreement.py), smoothed,
            # 8-bit activations (VNNI): default 1.4 0.99944, commercial 1.4 0.99921 (on 120 clips
            # the 1.3 heads gave 0.99926 / 0.99934, and 0.99876 / 0.99903 with 7-bit
            # activations). The 1.1 default head: int8 as it is 0.9913, with layers.3.fc2 fp32 0.9983.
            calibration = encoder_dir / CALIBRATION_FILE
            smoothed = calibration.is_file()
            if smoothed:
                encoder.smooth(Int8Calibration.from_file(calibration))
            else:
                logger.warning(
                    "no %s in %s: int8 without smoothing moves the logits (cosine to fp32 ~0.99);"
                    " make one with `python bench/calibrate_int8.py`",
                    CALIBRATION_FILE,
                    encoder_dir,
                )
            encoder = quantize_int8(encoder, per_channel=smoothed, full_range=native_vnni())
            dtype = "int8"
        elif quantize == "bf16":
            from .optimize import native_bf16

            if native_bf16():
                encoder = encoder.to(torch.bfloat16)
                encoder.mel.float()  # the STFT and log-mel stay fp32; the transformer runs bf16
                dtype = "bf16"
            else:
                logger.info("bf16 asked for %s, but this CPU has no native bf16 (AVX-512 BF16, AMX): fp32", head_dir)
        return cls(
            encoder, head, name=name, display_name=display_name, device=device, dtype=dtype, source=str(head_dir)
        )

    # -- the interface ------------------------------------------------------------------------

    def standardised(self, signals: Sequence[np.ndarray]) -> np.ndarray:
        """The clips' standardised pooled features, ``(clips, states, width)`` float32.

        A clip longer than the encoder's 30 s goes through in overlapping windows whose features
        are averaged, weighted by their length.
        """
        pieces, owner, weight = [], [], []
        for index, signal in enumerate(signals):
            for start, end in windows(len(signal), self.encoder.max_seconds):
                pieces.append(signal[start:end])
                owner.append(index)
                weight.append(end - start)
        # At most BATCH_SECONDS of audio per forward pass: a 10-minute clip is 27 windows, whose
        # hidden states and attention at once would take gigabytes.
        batches, current, seconds = [], [], 0.0
        for piece in pieces:
            if current and seconds + len(piece) / SAMPLING_RATE > BATCH_SECONDS:
                batches.append(current)
                current, seconds = [], 0.0
            current.append(piece)
            seconds += len(piece) / SAMPLING_RATE
        batches.append(current)
        with torch.inference_mode():
            pooled = torch.cat([self.encoder.pooled(batch).float() for batch in batches])
            z = ((pooled - self.mean) / self.std).cpu().numpy()
        out = np.zeros((len(signals), *z.shape[1:]), dtype=np.float32)
        totals = np.zeros(len(signals))
        for row, index, w in zip(z, owner, weight, strict=True):
            out[index] += row * w
            totals[index] += w
        return (out / totals[:, None, None]).astype(np.float32)

    @property
    def min_baseline(self) -> int:
        """Fewest clips a baseline needs before the baseline path answers."""
        return self.checkpoint.min_baseline

    def baseline_stats(self, features: np.ndarray) -> BaselineStats:
        """The running statistics of standardised ``features`` this head's baseline is formed from.

        With a per-label baseline: per label, the clips' projected features (:meth:`HeadEnsemble.project`)
        weighted by the clip path's probability of the label (the members' mean),
        ``(labels, members * hidden)``, and those probabilities' sums; else the plain sum of the features.
        """
        if self.checkpoint.baseline != "labels":
            return BaselineStats.of(features, self.info.version)
        x = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            sums, mass = self.head.class_statistics(x)
            projected = self.head.project(sums)
        return BaselineStats(len(features), projected.cpu().numpy(), mass.cpu().numpy(), self.info.version)

    def _against(self, x: torch.Tensor, stats: BaselineStats) -> torch.Tensor:
        """Logits of ``x`` against the baseline ``stats`` hold."""
        if (stats.mass is None) != (self.checkpoint.baseline != "labels"):
            raise ValueError(
                f"baseline statistics of another kind than this head's ({self.checkpoint.baseline}):"
                " build them with baseline_stats()"
            )
        total = torch.from_numpy(np.asarray(stats.total, dtype=np.float32)).to(self.device)
        weight = ramped_weight(self.checkpoint.baseline_weight, self.checkpoint.baseline_full_at, stats.clips)
        if stats.mass is None:
            mean = total / (stats.clips + self.checkpoint.shrink)
            return self.head(x, mean.expand_as(x), weight)
        mass = torch.from_numpy(np.asarray(stats.mass, dtype=np.float32)).to(self.device)
        projected = balanced_baseline(total, mass, self.checkpoint.shrink, feature_dims=1)
        return self.head(x) + weight * self.head.relative_from_projection(x, projected)

    def score(self, features: np.ndarray, baseline: BaselineStats | None = None) -> list[ModelOutput]:
        """Outputs for standardised ``features``, on the clip path or against ``baseline``.

        The baseline path answers only when the baseline holds at least ``min_baseline`` clips.
        """
        x = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(self.device)
        use_baseline = baseline is not None and baseline.clips >= self.checkpoint.min_baseline
        with torch.inference_mode():
            if use_baseline:
                assert baseline is not None
                logits = self._against(x, baseline)
                c = self.checkpoint
                logits = logits / ramped_temperature(
                    c.temperature_clip, c.temperature_baseline, c.baseline_full_at, baseline.clips
                )
            else:
                logits = self.head(x) / self.checkpoint.temperature_clip
            probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return [
            ModelOutput({label: float(p) for label, p in zip(self.labels, row, strict=True)}) for row in probabilities
        ]

    def process_signals(
        self,
        signals: Sequence[np.ndarray],
        sampling_rate: int = SAMPLING_RATE,
        *,
        same_speaker: bool = False,
    ) -> list[ModelOutput]:
        require_sampling_rate(sampling_rate, self.info.display_name)
        features = self.standardised(signals)
        return self.score(features, self.baseline_stats(features) if same_speaker else None)
