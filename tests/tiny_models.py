"""Tiny random-weight copies of the hub models' real classes, saved as the hub would hold them.

Each builder writes a directory that ``from_pretrained`` loads like the real repository: the same
model class, config keys and feature-extractor settings, only with a 32-wide, 2-layer encoder.
``bias`` forces a winning class: the classifier's weights are zeroed and its bias set, so the output
is the same for any input. ``gain`` scales the classifier's random weights instead, so that the
output depends clearly on the input (random heads give near-uniform probabilities).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    HubertConfig,
    HubertForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
)

SUPERB_LABELS = ("neu", "hap", "ang", "sad")
XLSR_LABELS = ("angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised")

# A small encoder shared by all stand-ins: 80x down-sampling (200 frames a second), 2 layers.
_TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16, 16, 16),
    "conv_kernel": (10, 8, 4),
    "conv_stride": (5, 4, 4),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "classifier_proj_size": 16,
    "mask_time_prob": 0.0,
}


def _id2label(labels: Sequence[str]) -> dict[int, str]:
    return dict(enumerate(labels))


def _force(classifier: torch.nn.Linear, bias: Sequence[float] | None, gain: float = 1.0) -> None:
    with torch.no_grad():
        if bias is None:
            classifier.weight.mul_(gain)
            return
        classifier.weight.zero_()
        classifier.bias.copy_(torch.tensor(list(bias), dtype=classifier.bias.dtype))


def _extractor(directory: Path, *, do_normalize: bool, attention_mask: bool) -> None:
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=attention_mask,
    ).save_pretrained(directory)


def _save_layer_norm_classifier(
    directory: str | Path, config_class, model_class, labels, bias, seed: int, gain: float, do_normalize: bool
) -> Path:
    """A tiny large-model-shaped classifier (layer norm, attention mask) and its extractor."""
    directory = Path(directory)
    torch.manual_seed(seed)
    config = config_class(
        **_TINY,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_labels=len(labels),
        id2label=_id2label(labels),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = model_class(config).eval()
    _force(model.classifier, bias, gain)
    model.save_pretrained(directory)
    _extractor(directory, do_normalize=do_normalize, attention_mask=True)
    return directory


def save_superb_like(
    directory: str | Path,
    labels: Sequence[str] = SUPERB_LABELS,
    bias: Sequence[float] | None = None,
    seed: int = 0,
    gain: float = 1.0,
) -> Path:
    """HuBERT-Large SUPERB-ER shape: layer norm, attention mask, no normalisation."""
    return _save_layer_norm_classifier(
        directory, HubertConfig, HubertForSequenceClassification, labels, bias, seed, gain, do_normalize=False
    )


def save_xlsr_like(
    directory: str | Path,
    labels: Sequence[str] = XLSR_LABELS,
    bias: Sequence[float] | None = None,
    seed: int = 0,
    gain: float = 1.0,
) -> Path:
    """Wav2Vec2-XLSR (ehcalabres) shape: layer norm, attention mask, normalised input."""
    return _save_layer_norm_classifier(
        directory, Wav2Vec2Config, Wav2Vec2ForSequenceClassification, labels, bias, seed, gain, do_normalize=True
    )


def save_group_norm_extractor(directory: str | Path) -> Path:
    """Feature extractor of facebook/hubert-base-ls960 (group norm: no mask, no normalisation)."""
    directory = Path(directory)
    _extractor(directory, do_normalize=False, attention_mask=False)
    return directory


# The stand-in for ExHuBERT's own modelling code, loaded through trust_remote_code. Like the real
# repository it registers its classes through config.json's auto_map and has no preprocessor config.
_EXHUBERT_CODE = '''
"""Tiny stand-in for ExHuBERT's modelling code: a HuBERT encoder and a 6-way head."""

import torch
from transformers import HubertConfig, HubertModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class ExHuBERTConfig(HubertConfig):
    model_type = "exhubert_standin"


class ExHuBERTForAudioClassification(PreTrainedModel):
    config_class = ExHuBERTConfig
    base_model_prefix = "hubert"
    main_input_name = "input_values"

    def __init__(self, config):
        super().__init__(config)
        self.hubert = HubertModel(config)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_values, attention_mask=None, **kwargs):
        hidden = self.hubert(input_values, attention_mask=attention_mask).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(hidden.mean(dim=1)))
'''


def save_exhubert_like(
    directory: str | Path, bias: Sequence[float] | None = None, seed: int = 0, gain: float = 1.0
) -> Path:
    """ExHuBERT shape: custom code via ``auto_map``, 6 classes named LABEL_0..5, group norm, no extractor."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ExHuBERT_model.py").write_text(_EXHUBERT_CODE, "utf-8")
    # Import the code from where it was written, as transformers will, to build and save weights.
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"exhubert_standin_{seed}", directory / "ExHuBERT_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    config = module.ExHuBERTConfig(**_TINY, feat_extract_norm="group", num_labels=6)
    model = module.ExHuBERTForAudioClassification(config).eval()
    _force(model.classifier, bias, gain)
    model.save_pretrained(directory)
    config_path = directory / "config.json"
    saved = json.loads(config_path.read_text("utf-8"))
    saved["auto_map"] = {
        "AutoConfig": "ExHuBERT_model.ExHuBERTConfig",
        "AutoModelForAudioClassification": "ExHuBERT_model.ExHuBERTForAudioClassification",
    }
    config_path.write_text(json.dumps(saved, indent=2), "utf-8")
    return directory
