"""Load the models of a preset, keeping going when one fails.

A model that cannot load (not downloaded, no network, broken file) does not stop the service:
it is reported in :class:`LoadReport` and ``/health`` says ``degraded`` and why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import ModelsConfig, ModelSpec
from .base import EmotionModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadFailure:
    """A model of the preset that could not be loaded, and why."""

    name: str
    display_name: str
    source: str
    reason: str


@dataclass
class LoadReport:
    """The loaded models of a preset with their ensemble weights, and the failures."""

    preset: str
    models: dict[str, EmotionModel] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)
    load_seconds: float = 0.0


def _load_transformers(spec: ModelSpec, models_dir: str | None, device: str, quantize: str) -> EmotionModel:
    from .transformers_backend import TransformersModel

    return TransformersModel.load(spec, models_dir=models_dir, device=device, quantize=quantize)


def _load_bundled(spec: ModelSpec, models_dir: str | None, device: str, quantize: str) -> EmotionModel:
    from .bundled import BundledModel

    # The bundled network is a few hundred kB of convolutions: int8 would not make it faster.
    return BundledModel.load(spec.source or None, device=device)


def _load_encoder(spec: ModelSpec, models_dir: str | None, device: str, quantize: str) -> EmotionModel:
    from .encoder import EncoderModel, shipped

    return EncoderModel.load(
        shipped(spec.source),
        encoder_dir=shipped(spec.encoder or "whisper-base-encoder"),
        device=device,
        quantize=quantize,
        name=spec.name,
        display_name=spec.display_name,
    )


BACKENDS: dict[str, Callable[[ModelSpec, str | None, str, str], EmotionModel]] = {
    "transformers": _load_transformers,
    "bundled": _load_bundled,
    "encoder": _load_encoder,
}

# What a backend may raise when a model cannot be loaded: files missing or unreadable, bad
# configs, missing optional packages, and the backends' own load errors (subclasses of these).
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError, RuntimeError, KeyError)


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is usable, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_preset(
    config: ModelsConfig,
    preset: str,
    *,
    models_dir: str | None = None,
    device: str = "auto",
    quantize: str = "auto",
) -> LoadReport:
    """Load every model of ``preset``; failures are collected, not raised.

    ``quantize="auto"`` runs each model as its ``models.toml`` entry says (``quantize``, default
    fp32); ``"int8"`` runs the linear layers of every model in int8 on CPU (ignored on CUDA,
    which runs them in fp16).

    Raises:
        ConfigError: The preset does not exist.
    """
    weights = config.preset(preset)
    device = resolve_device(device)
    report = LoadReport(preset=preset)
    started = time.perf_counter()
    for name, weight in weights.items():
        spec = config.models[name]
        loader = BACKENDS.get(spec.backend)
        if loader is None:
            reason = f"unknown backend {spec.backend!r}; use one of {', '.join(sorted(BACKENDS))}"
            report.failures.append(LoadFailure(name, spec.display_name, spec.source, reason))
            continue
        try:
            chosen = (spec.quantize or "none") if quantize == "auto" else quantize
            model = loader(spec, models_dir, device, chosen)
        except LOAD_ERRORS as exc:
            logger.warning("model %s (%s) could not be loaded: %s", name, spec.source, exc)
            report.failures.append(LoadFailure(name, spec.display_name, spec.source, str(exc)))
            continue
        report.models[name] = model
        report.weights[name] = weight
        logger.info("model %s loaded from %s on %s", name, model.info.source, model.info.device)
    report.load_seconds = time.perf_counter() - started
    return report
