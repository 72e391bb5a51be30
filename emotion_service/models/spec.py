"""How a model is described in the models config file (``models.toml``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the ``[models.<name>]`` table of the models config file.

    Attributes:
        name: Registry key, e.g. ``"hubert_large"``.
        display_name: Shown in results, e.g. ``"HuBERT-Large"``.
        backend: ``"transformers"`` (a Hugging Face audio-classification model) or ``"bundled"``.
        source: Hub id (``"superb/hubert-large-superb-er"``) or a local directory/file.
        revision: Hub revision (commit) to pin; None for the default branch.
        licence: Licence of the weights, shown in /health and the README.
        commercial_use: False for non-commercial weights (CC BY-NC...).
        trust_remote_code: Run the model's own modelling code (ExHuBERT needs it).
        feature_extractor: Hub id or directory to take the feature extractor from when the
            model repository has none of its own (ExHuBERT borrows facebook/hubert-base-ls960's).
        labels: Class names in index order, overriding ``config.id2label`` when a model only
            has generic names (``LABEL_0``...).
        window_seconds: Longer audio is analysed in windows of this length (None: whole clip).
    """

    name: str
    display_name: str
    backend: str
    source: str
    revision: str | None = None
    licence: str = "unknown"
    commercial_use: bool = True
    trust_remote_code: bool = False
    feature_extractor: str | None = None
    labels: tuple[str, ...] | None = None
    window_seconds: float | None = None
