"""Hugging Face audio-classification models (HuBERT, wav2vec2, ExHuBERT) behind :class:`EmotionModel`.

A model is found, in order, in: the local directory named by ``source``; ``MODELS_DIR/<hub id>``
(filled by ``python -m emotion_service.download``); the hub cache, downloading when the hub can be
reached. Classes are mapped onto the canonical labels **by name**; arousal x valence classes
(ExHuBERT) become ``arousal``/``valence`` and are spread over the categories they are consistent with.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from ..config import SAMPLING_RATE, ModelSpec
from ..labels import CANONICAL_LABELS, canonical_label
from .base import EmotionModel, ModelInfo, ModelOutput, require_sampling_rate
from .optimize import fold_weight_norm, prepare_for_cpu, quantize_int8

logger = logging.getLogger(__name__)

DOWNLOAD_HINT = "run `python -m emotion_service.download --preset full` on a machine with internet"

# What from_pretrained raises for missing, unreadable or incompatible files. Remote modelling code
# (trust_remote_code) fails at import with ImportError/AttributeError/TypeError when it does not
# match the installed transformers (ExHuBERT's card revision imports transformers.deepspeed).
_FROM_PRETRAINED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    KeyError,
    ImportError,
    AttributeError,
    TypeError,
)

# Batches are cut so that (clips in the batch) x (longest clip) stays below this many samples:
# attention memory grows with the square of the length, so long clips go alone or windowed. On CPU
# activations take host memory next to the weights (about 40 MB per second of audio in a batch,
# fp32, from the engine benchmark's RSS), up to one batch per core runs at once (see batching),
# and batching buys little there (HuBERT-Large: 1.69 s per 5 s clip alone, 1.53-1.68 s in batches
# of 8), so CPU batches stay small: 10 s per batch with two calls side by side took the fp32 full
# preset to 1.35x its weights, 5 s to 1.28-1.29x. On a GPU, batching is what makes it fast and
# the activations are in GPU memory.
MAX_BATCH_SAMPLES = {"cpu": 5 * SAMPLING_RATE, "cuda": 40 * SAMPLING_RATE}
MAX_BATCH_CLIPS = 8
# Models without window_seconds still get windows of this length beyond it: one 10-minute clip
# analysed whole would need tens of GB for attention and take the service down.
MAX_WHOLE_SECONDS = 30.0
# Neighbouring windows of a long signal share at least this share of a window, so that speech cut
# at one window's edge is whole in the next. Half (what the engine did first) analyses long audio
# twice over; a quarter analyses it 1.33 times, and a 5 s clip in 3 s windows as 6 s instead of 9 s.
MIN_WINDOW_OVERLAP = 0.25
# wav2vec2/HuBERT's convolutional encoder needs 400 samples (25 ms) for one frame; shorter clips
# are zero-padded to that rather than crashing the model.
MIN_SAMPLES = 400

# ExHuBERT-style classes are arousal x valence cells, not emotions. Each cell's probability is
# spread evenly over the canonical categories that sit in that cell of the circumplex, because the
# model cannot tell them apart (e.g. anger, fear and disgust are all high arousal + negative
# valence). Coarse by design: it lets the cells vote in the ensemble without pretending to a
# categorical prediction. Surprise is placed at high arousal + neutral valence, calm at low
# arousal + positive valence, neutral at low arousal + neutral valence.
AROUSAL_VALENCE_TO_LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    ("high", "negative"): ("angry", "fearful", "disgust"),
    ("high", "neutral"): ("surprised",),
    ("high", "positive"): ("happy",),
    ("low", "negative"): ("sad",),
    ("low", "neutral"): ("neutral",),
    ("low", "positive"): ("calm",),
}
_AROUSAL_WORDS = {"low": "low", "lo": "low", "high": "high", "hi": "high"}
_VALENCE_WORDS = {
    "negative": "negative",
    "neg": "negative",
    "neutral": "neutral",
    "neu": "neutral",
    "positive": "positive",
    "pos": "positive",
}


class ModelLoadError(RuntimeError):
    """A hub model could not be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class _LabelMap:
    """How a model's class probabilities become canonical probabilities and dimensions."""

    labels: tuple[str, ...]  # canonical labels the model can output, in canonical order
    matrix: np.ndarray  # (classes, labels): class probability -> canonical probability
    arousal: np.ndarray | None  # (classes,): 1 for high-arousal cells; None: not a dimensional model
    valence: np.ndarray | None  # (classes,): 1 positive, 0.5 neutral, 0 negative
    dropped: tuple[str, ...]  # class names that map to no canonical label

    def apply(self, class_probs: np.ndarray) -> ModelOutput:
        mapped = class_probs @ self.matrix
        # Renormalise over the mapped classes: dropped classes must not dilute the rest.
        mapped = mapped / max(float(mapped.sum()), 1e-12)
        probabilities = {label: float(p) for label, p in zip(self.labels, mapped, strict=True)}
        if self.arousal is None or self.valence is None:
            return ModelOutput(probabilities)
        return ModelOutput(
            probabilities,
            arousal=float(class_probs @ self.arousal),
            valence=float(class_probs @ self.valence),
        )


def arousal_valence_cell(name: str) -> tuple[str, str] | None:
    """Return ``(arousal, valence)`` for a class name such as ``low_arousal_negative_valence``.

    Args:
        name: A class name. It must mention arousal or valence, one of low/high and one of
            negative/neutral/positive (short forms lo/hi, neg/neu/pos accepted).

    Returns:
        ``("low" | "high", "negative" | "neutral" | "positive")``, or None if the name is not a cell.
    """
    key = name.lower()
    if "arousal" not in key and "valence" not in key:
        return None
    words = re.split(r"[^a-z]+", key)
    arousal = [_AROUSAL_WORDS[w] for w in words if w in _AROUSAL_WORDS]
    valence = [_VALENCE_WORDS[w] for w in words if w in _VALENCE_WORDS]
    if len(arousal) != 1 or len(valence) != 1:
        return None
    return arousal[0], valence[0]


def build_label_map(class_names: Sequence[str]) -> _LabelMap:
    """Map a model's class names (index order) onto the canonical labels, by name.

    Raises:
        ModelLoadError: No class name means anything canonical.
    """
    cells = [arousal_valence_cell(name) for name in class_names]
    columns: list[dict[str, float]] = []
    if all(cell is not None for cell in cells):
        for cell in cells:
            assert cell is not None  # for the type checker; checked just above
            targets = AROUSAL_VALENCE_TO_LABELS[cell]
            columns.append({label: 1.0 / len(targets) for label in targets})
        arousal = np.array([1.0 if cell and cell[0] == "high" else 0.0 for cell in cells])
        valence = np.array([{"negative": 0.0, "neutral": 0.5, "positive": 1.0}[cell[1]] for cell in cells if cell])
    else:
        for name in class_names:
            label = canonical_label(name)
            columns.append({label: 1.0} if label else {})
        arousal = valence = None
    known = tuple(label for label in CANONICAL_LABELS if any(label in column for column in columns))
    if not known:
        raise ModelLoadError(
            f"none of the model's classes {list(class_names)} names an emotion this service knows "
            f"({', '.join(CANONICAL_LABELS)}): set `labels = [...]` for the model in models.toml, "
            "one name per class in index order (see the model card)."
        )
    matrix = np.zeros((len(class_names), len(known)), dtype=np.float64)
    for row, column in enumerate(columns):
        for label, weight in column.items():
            matrix[row, known.index(label)] = weight
    dropped = tuple(name for name, column in zip(class_names, columns, strict=True) if not column)
    return _LabelMap(known, matrix, arousal, valence, dropped)


# -- finding the files --------------------------------------------------------------------------

_hub_reachable: bool | None = None
_hub_lock = threading.Lock()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "on", "true", "yes")


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub can be reached: offline env vars, else one TCP connect per process.

    Without this, a model missing from the cache costs ~55 s of download retries before failing.
    """
    global _hub_reachable
    if _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE"):
        return False
    with _hub_lock:
        if _hub_reachable is None:
            endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
            port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
            try:
                with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
                    _hub_reachable = True
            except OSError:
                _hub_reachable = False
            logger.info("Hugging Face hub %s reachable: %s", endpoint.hostname, _hub_reachable)
        return _hub_reachable


@dataclass(frozen=True)
class _Location:
    """Where to load a repository from: a local directory, or the hub id (through the cache)."""

    path: str  # directory or hub id, passed to from_pretrained
    local: bool
    hub_id: str
    cached: bool = False  # a snapshot directory of the hub cache


def _locate(source: str, models_dir: str | None) -> _Location:
    if os.path.isdir(source):
        return _Location(source, True, source)
    if models_dir:
        candidate = os.path.join(models_dir, *source.split("/"))
        if os.path.isdir(candidate):
            return _Location(candidate, True, source)
    return _Location(source, False, source)


def _local_commit(directory: str) -> str | None:
    """The commit a directory was downloaded at, when huggingface_hub left a record of it."""
    # snapshot_download(local_dir=...) writes .cache/huggingface/download/<file>.metadata whose
    # first line is the commit; a hub-cache snapshot directory is named after its commit.
    metadata = Path(directory, ".cache", "huggingface", "download", "config.json.metadata")
    try:
        first = metadata.read_text("utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        first = ""
    if re.fullmatch(r"[0-9a-f]{40}", first):
        return first
    name = Path(directory).resolve().name
    if Path(directory).resolve().parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", name):
        return name
    return None


def _cached_commit(hub_id: str, revision: str | None, cache_dir: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json", cache_dir=cache_dir, revision=revision)
    if isinstance(found, str):
        return _local_commit(os.path.dirname(found))
    return None


def _offline(
    where: _Location, revision: str | None, filename: str, models_dir: str | None, spec: ModelSpec
) -> _Location:
    """Resolve a hub id to its snapshot directory in the hub cache, without the network.

    Given a hub id, from_pretrained would still make huggingface_hub try the network (retries,
    telemetry) before failing, even with ``local_files_only``; given a directory it does not.

    Raises:
        ModelLoadError: The repository is not in the cache.
    """
    from huggingface_hub import try_to_load_from_cache

    if where.local:
        return where
    for cache_dir in dict.fromkeys((models_dir, None)):  # MODELS_DIR as hub cache, then the default cache
        found = try_to_load_from_cache(where.hub_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(found, str):
            return _Location(os.path.dirname(found), True, where.hub_id, cached=True)
    looked = f"MODELS_DIR ({models_dir}) and the hub cache" if models_dir else "the hub cache (MODELS_DIR is not set)"
    raise ModelLoadError(
        f"{spec.display_name}: {where.hub_id} (revision {revision or 'main'}) is not in {looked}, and the "
        f"hub cannot be reached. Fix: {DOWNLOAD_HINT}, then copy the directory here and set MODELS_DIR to "
        f"the directory holding {where.hub_id}/; or set `source` of [models.{spec.name}] in models.toml "
        "to a local directory."
    )


def _load_error(what: str, location: _Location, spec: ModelSpec, online: bool, exc: BaseException) -> ModelLoadError:
    if location.cached:
        fix = (
            f"the hub cache holds an incomplete copy of {location.hub_id} in {location.path}; {DOWNLOAD_HINT} "
            f"and set MODELS_DIR to the directory holding {location.hub_id}/, or load it once with internet"
        )
    elif location.local:
        fix = (
            f"the directory {location.path} does not hold a loadable model; download it again "
            f"({DOWNLOAD_HINT}) or point `source` of [models.{spec.name}] in models.toml at a good copy"
        )
    elif online:
        fix = (
            f"check the hub id {location.hub_id!r} and revision {spec.revision!r} of [models.{spec.name}] "
            "in models.toml, and that this machine may download from the hub"
        )
    else:
        fix = f"{DOWNLOAD_HINT}, or set MODELS_DIR to a directory holding {location.hub_id}/"
    if isinstance(exc, ImportError | AttributeError | TypeError) and spec.trust_remote_code:
        fix += (
            "; the model's own code does not run with the installed transformers: pin a `revision` "
            "whose code does (see models.toml)"
        )
    return ModelLoadError(f"{spec.display_name}: cannot load the {what} from {location.path}: {exc}. Fix: {fix}.")


# -- the model ----------------------------------------------------------------------------------


class TransformersModel(EmotionModel):
    """A Hugging Face audio-classification model with its feature extractor.

    Use :meth:`load`; the constructor takes already loaded parts.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        feature_extractor: Any,
        label_map: _LabelMap,
        info: ModelInfo,
        *,
        device: torch.device,
        window_seconds: float | None = None,
    ) -> None:
        self.module = module
        self.feature_extractor = feature_extractor
        self.label_map = label_map
        self.info = info
        self.device = device
        self.window_samples = int(round(window_seconds * SAMPLING_RATE)) if window_seconds else None
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.max_batch_samples = MAX_BATCH_SAMPLES["cuda" if device.type == "cuda" else "cpu"]

    @classmethod
    def load(
        cls, spec: ModelSpec, *, models_dir: str | None = None, device: str = "cpu", quantize: str = "none"
    ) -> TransformersModel:
        """Load the model of ``spec`` (see the module docstring for where it is looked for).

        Args:
            spec: The model's entry of the models config.
            models_dir: Directory of pre-downloaded models (``<models_dir>/<hub id>/``); also the
                hub cache directory when the model is fetched from the hub.
            device: ``cpu``, ``cuda`` or ``cuda:N``.
            quantize: ``int8`` runs the linear layers and feature convolutions in int8 on CPU
                (see :mod:`.optimize`; speed and the logits' cosine to fp32 in the README);
                ignored on CUDA, which runs in fp16.

        Raises:
            ModelLoadError: The model cannot be found or loaded, or its classes name no known emotion.
        """
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        torch_device = torch.device(device)
        # Only look at CUDA when asked to, so that the CPU path never initialises it.
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"DEVICE={device} but no CUDA GPU is usable here: set DEVICE=cpu or DEVICE=auto.")

        own_extractor = spec.feature_extractor is None
        extractor_revision = spec.revision if own_extractor else None
        location = _locate(spec.source, models_dir)
        extractor_location = location if own_extractor else _locate(spec.feature_extractor or "", models_dir)
        online = True
        if not (location.local and extractor_location.local):
            online = hub_reachable()
        if not online:
            # Setting HF_HUB_OFFLINE now would be too late (huggingface_hub reads it at import), and
            # local_files_only still lets it try the network: resolve in the cache, or fail at once.
            location = _offline(location, spec.revision, "config.json", models_dir, spec)
            extractor_location = _offline(
                extractor_location, extractor_revision, "preprocessor_config.json", models_dir, spec
            )

        def kwargs_for(where: _Location, revision: str | None) -> dict[str, Any]:
            return {} if where.local else {"cache_dir": models_dir, "revision": revision}

        try:
            extractor = AutoFeatureExtractor.from_pretrained(
                extractor_location.path,
                trust_remote_code=spec.trust_remote_code and own_extractor,
                **kwargs_for(extractor_location, extractor_revision),
            )
        except _FROM_PRETRAINED_ERRORS as exc:
            raise _load_error("feature extractor", extractor_location, spec, online, exc) from exc
        try:
            module = AutoModelForAudioClassification.from_pretrained(
                location.path,
                trust_remote_code=spec.trust_remote_code,
                **kwargs_for(location, spec.revision),
            )
        except _FROM_PRETRAINED_ERRORS as exc:
            raise _load_error("model", location, spec, online, exc) from exc

        config = module.config
        if spec.labels is not None:
            if len(spec.labels) != config.num_labels:
                raise ModelLoadError(
                    f"{spec.display_name}: models.toml gives {len(spec.labels)} labels but the model has "
                    f"{config.num_labels} classes: list one name per class, in index order."
                )
            class_names = tuple(spec.labels)
        else:
            class_names = tuple(str(config.id2label[i]) for i in range(config.num_labels))
        label_map = build_label_map(class_names)
        if label_map.dropped:
            logger.warning(
                "%s: classes %s map to no canonical label and are left out", spec.display_name, list(label_map.dropped)
            )

        # Checkpoints may be stored in half precision; CPU inference runs in float32.
        fold_weight_norm(module)
        module = module.half() if torch_device.type == "cuda" else module.float()
        module.to(torch_device)
        module.eval()
        int8 = quantize == "int8" and torch_device.type == "cpu"
        if int8:
            module = quantize_int8(module)
        elif torch_device.type == "cpu":
            module = prepare_for_cpu(module)

        if location.local:
            version = _local_commit(location.path) or spec.revision or "local"
        else:
            version = _cached_commit(location.hub_id, spec.revision, models_dir) or spec.revision or "main"
        info = ModelInfo(
            name=spec.name,
            display_name=spec.display_name,
            source=location.hub_id if location.cached else location.path,
            version=version,
            licence=spec.licence,
            labels=label_map.labels,
            device=str(torch_device),
            commercial_use=spec.commercial_use,
            extra={
                "classes": ",".join(class_names),
                "output": "arousal_valence" if label_map.arousal is not None else "categorical",
                "dtype": "fp16" if torch_device.type == "cuda" else "int8" if int8 else "fp32",
                "attention_mask": str(bool(getattr(extractor, "return_attention_mask", False))).lower(),
                "window_seconds": str(spec.window_seconds) if spec.window_seconds else "none",
            },
        )
        return cls(module, extractor, label_map, info, device=torch_device, window_seconds=spec.window_seconds)

    def windows(self, length: int) -> list[tuple[int, int]]:
        """``(start, end)`` sample ranges analysed for a signal of ``length`` samples.

        As few windows as cover the signal with neighbours overlapping by at least
        :data:`MIN_WINDOW_OVERLAP` of a window, spread evenly: the first starts at 0, the last ends
        at the end (a 5 s clip in 3 s windows: 0-3 s and 2-5 s). Without ``window_seconds``, clips
        longer than :data:`MAX_WHOLE_SECONDS` are windowed at that length.
        """
        size = self.window_samples or int(MAX_WHOLE_SECONDS * SAMPLING_RATE)
        if length <= size:
            return [(0, length)]
        longest_hop = size * (1 - MIN_WINDOW_OVERLAP)
        count = 1 + math.ceil((length - size) / longest_hop)
        starts = [round(k * (length - size) / (count - 1)) for k in range(count)]
        return [(start, start + size) for start in starts]

    def process_signals(
        self,
        signals: Sequence[np.ndarray],
        sampling_rate: int = SAMPLING_RATE,
        *,
        same_speaker: bool = False,
    ) -> list[ModelOutput]:
        """Score several clips (see :meth:`EmotionModel.process_signals`); ``same_speaker`` is unused.

        Raises:
            ValueError: ``sampling_rate`` is not 16000.
        """
        require_sampling_rate(sampling_rate, self.info.display_name)
        arrays = [np.asarray(signal, dtype=np.float32).reshape(-1) for signal in signals]
        pieces = [(i, start, end) for i, array in enumerate(arrays) for start, end in self.windows(len(array))]
        # Longest first, so that each batch pads little and the biggest one shows up at once.
        order = sorted(range(len(pieces)), key=lambda k: pieces[k][2] - pieces[k][1], reverse=True)
        class_probs: list[np.ndarray | None] = [None] * len(pieces)
        for batch in self._batches(order, pieces):
            chunk = [arrays[pieces[k][0]][pieces[k][1] : pieces[k][2]] for k in batch]
            for k, probs in zip(batch, self._forward(chunk), strict=True):
                class_probs[k] = probs

        per_signal: list[list[tuple[ModelOutput, int]]] = [[] for _ in arrays]
        for (i, start, end), probs in zip(pieces, class_probs, strict=True):
            assert probs is not None  # every piece is in exactly one batch
            per_signal[i].append((self.label_map.apply(probs), end - start))
        return [_weighted_mean(outputs) for outputs in per_signal]

    def _batches(self, order: list[int], pieces: list[tuple[int, int, int]]) -> list[list[int]]:
        # Without an attention mask, padding changes what the model computes (group norm and
        # attention run over it), so such models are only batched with clips of the same length;
        # windows of long signals all have one length and still batch.
        masked = bool(getattr(self.feature_extractor, "return_attention_mask", False))
        batches: list[list[int]] = []
        current: list[int] = []
        for k in order:  # longest first: the first clip of a batch sets its padded length
            length = pieces[k][2] - pieces[k][1]
            longest = pieces[current[0]][2] - pieces[current[0]][1] if current else length
            full = len(current) >= MAX_BATCH_CLIPS or (len(current) + 1) * longest > self.max_batch_samples
            if current and (full or (not masked and length != longest)):
                batches.append(current)
                current = []
            current.append(k)
        if current:
            batches.append(current)
        return batches

    def _forward(self, chunk: list[np.ndarray]) -> np.ndarray:
        chunk = [np.pad(x, (0, MIN_SAMPLES - len(x))) if len(x) < MIN_SAMPLES else x for x in chunk]
        # The extractor decides: layer-norm (large) models return an attention mask, group-norm
        # models do not (and get equal-length batches, see _batches); do_normalize comes from it too.
        features = self.feature_extractor(chunk, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        inputs = {"input_values": features["input_values"].to(self.device, self.dtype)}
        if "attention_mask" in features:
            inputs["attention_mask"] = features["attention_mask"].to(self.device)
        with torch.inference_mode():
            output = self.module(**inputs)
        logits = output.logits if hasattr(output, "logits") else output[0] if isinstance(output, tuple) else output
        # Softmax in float32: fp16 logits lose the small probabilities the ensemble averages.
        return torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)


def _weighted_mean(outputs: list[tuple[ModelOutput, int]]) -> ModelOutput:
    """Average window outputs weighted by window length."""
    if len(outputs) == 1:
        return outputs[0][0]
    weights = np.array([length for _, length in outputs], dtype=np.float64)
    weights /= weights.sum()
    labels = outputs[0][0].probabilities.keys()
    probabilities = {
        label: float(sum(w * out.probabilities[label] for (out, _), w in zip(outputs, weights, strict=True)))
        for label in labels
    }
    first = outputs[0][0]
    if first.arousal is None or first.valence is None:
        return ModelOutput(probabilities)
    arousal = float(sum(w * (out.arousal or 0.0) for (out, _), w in zip(outputs, weights, strict=True)))
    valence = float(sum(w * (out.valence or 0.0) for (out, _), w in zip(outputs, weights, strict=True)))
    return ModelOutput(probabilities, arousal=arousal, valence=valence)
