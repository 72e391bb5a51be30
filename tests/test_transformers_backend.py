"""The transformers backend, on tiny random-weight models of the real classes saved to disk.

Everything loads through the same paths a user's models take (a local ``source`` directory, or
``MODELS_DIR/<hub id>``), with the hub marked offline and sockets refused: nothing touches the network.
"""

from __future__ import annotations

import gc
import itertools
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers.dynamic_module_utils

from emotion_service import download
from emotion_service.config import ModelSpec, load_models_config
from emotion_service.labels import CANONICAL_LABELS
from emotion_service.models import transformers_backend
from emotion_service.models.registry import load_preset
from emotion_service.models.transformers_backend import ModelLoadError, TransformersModel, build_label_map
from tests import tiny_models

SR = 16_000
EXHUBERT_ID = "amiriparian/ExHuBERT"
HUBERT_BASE_ID = "facebook/hubert-base-ls960"
XLSR_ID = "ehcalabres/wav2vec2-lg-xlsr-en-speech-emotion-recognition"
# The cell order the packaged models.toml gives ExHuBERT; the tests follow whatever it says.
EXHUBERT_LABELS = load_models_config().models["exhubert"].labels
FORCE = 20.0  # a logit margin that makes one class win with probability ~1


def one_hot(index: int, size: int) -> list[float]:
    return [FORCE if i == index else 0.0 for i in range(size)]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network: the hub is marked offline, sockets fail loudly, remote code goes to tmp."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts: list[object] = []

    def no_network(address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"tests must not open connections (to {address})")

    # Libraries may swallow the error and retry, so attempts are recorded and checked afterwards.
    monkeypatch.setattr(socket, "create_connection", no_network)
    # trust_remote_code copies the model's code into HF_MODULES_CACHE and puts it on sys.path.
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    assert attempts == [], f"a test tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A MODELS_DIR as ``python -m emotion_service.download`` leaves it, with tiny models inside."""
    root = tmp_path_factory.mktemp("models")
    tiny_models.save_xlsr_like(root / XLSR_ID, bias=one_hot(tiny_models.XLSR_LABELS.index("calm"), 8))
    tiny_models.save_exhubert_like(root / EXHUBERT_ID, gain=100)
    tiny_models.save_group_norm_extractor(root / HUBERT_BASE_ID)
    return root


@pytest.fixture(scope="module")
def superb_dir(tmp_path_factory) -> Path:
    """A SUPERB-like model with a strong random head, so outputs depend on the input."""
    return tiny_models.save_superb_like(tmp_path_factory.mktemp("superb") / "model", gain=100)


def exhubert_spec(**changes) -> ModelSpec:
    spec = load_models_config().models["exhubert"]
    return ModelSpec(**{**spec.__dict__, **changes})


def write_toml(path: Path, models: dict[str, dict], preset: dict[str, float]) -> Path:
    lines = []
    for name, entry in models.items():
        lines.append(f"[models.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
    lines.append("[presets.p]")
    lines += [f"{name} = {weight}" for name, weight in preset.items()]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = np.sin(2 * np.pi * (120 + 40 * np.sin(2 * np.pi * 3 * t)) * t)
    return (0.3 * tone * (1 + np.sin(2 * np.pi * 2 * t)) + 0.02 * rng.normal(size=t.size)).astype(np.float32)


def assert_distribution(probabilities: dict[str, float], labels: tuple[str, ...]) -> None:
    assert tuple(probabilities) == labels
    assert set(labels) <= set(CANONICAL_LABELS)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)


# -- loading as a user does ---------------------------------------------------------------------


def test_load_preset_from_local_dir_and_models_dir(tmp_path, models_dir, superb_dir):
    exhubert = load_models_config().models["exhubert"]
    toml = write_toml(
        tmp_path / "models.toml",
        {
            "hubert_large": {"backend": "transformers", "source": str(superb_dir), "display_name": "HuBERT-Large"},
            "wav2vec2_xlsr": {"backend": "transformers", "source": XLSR_ID, "licence": "Apache-2.0"},
            "exhubert": {
                "backend": "transformers",
                "source": EXHUBERT_ID,
                "revision": exhubert.revision,
                "trust_remote_code": True,
                "feature_extractor": HUBERT_BASE_ID,
                "labels": list(EXHUBERT_LABELS),
                "window_seconds": 3.0,
                "commercial_use": False,
            },
            "missing": {"backend": "transformers", "source": "nobody/not-downloaded"},
        },
        {"hubert_large": 1, "wav2vec2_xlsr": 1, "exhubert": 1, "missing": 1},
    )
    started = time.perf_counter()
    report = load_preset(load_models_config(toml), "p", models_dir=str(models_dir), device="cpu")
    assert time.perf_counter() - started < 10

    assert sorted(report.models) == ["exhubert", "hubert_large", "wav2vec2_xlsr"]
    assert [failure.name for failure in report.failures] == ["missing"]
    assert "python -m emotion_service.download" in report.failures[0].reason
    assert "MODELS_DIR" in report.failures[0].reason

    hubert, xlsr, exh = report.models["hubert_large"], report.models["wav2vec2_xlsr"], report.models["exhubert"]
    assert hubert.info.source == str(superb_dir)
    assert xlsr.info.source == str(models_dir / XLSR_ID)
    assert exh.info.source == str(models_dir / EXHUBERT_ID)
    assert hubert.info.labels == ("neutral", "happy", "sad", "angry")
    assert xlsr.info.labels == CANONICAL_LABELS
    assert exh.info.labels == CANONICAL_LABELS
    assert (hubert.info.version, hubert.info.device, hubert.info.display_name) == ("local", "cpu", "HuBERT-Large")
    assert exh.info.commercial_use is False and exh.info.extra["output"] == "arousal_valence"

    clip = speech_like(2.0)
    for model in report.models.values():
        output = model(clip)
        assert_distribution(output.probabilities, model.info.labels)
    assert xlsr(clip).top_label == "calm"


def test_version_comes_from_download_metadata(tmp_path, superb_dir):
    import shutil

    copy = Path(shutil.copytree(superb_dir, tmp_path / "superb"))
    record = copy / ".cache" / "huggingface" / "download"
    record.mkdir(parents=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    (record / "config.json.metadata").write_text(f"{commit}\netag\n1700000000.0\n", "utf-8")
    model = TransformersModel.load(ModelSpec("h", "H", "transformers", str(copy), revision="main"))
    assert model.info.version == commit


def test_offline_load_from_the_hub_cache(tmp_path, superb_dir):
    import shutil

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "models--superb--hubert-large-superb-er"
    shutil.copytree(superb_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, "utf-8")
    spec = ModelSpec("h", "H", "transformers", "superb/hubert-large-superb-er")
    model = TransformersModel.load(spec, models_dir=str(tmp_path))
    assert (model.info.source, model.info.version) == ("superb/hubert-large-superb-er", commit)
    assert_distribution(model(speech_like(1.0)).probabilities, model.info.labels)
    # A pinned revision that is not in the cache is not silently replaced by another.
    pinned = ModelSpec("h", "H", "transformers", "superb/hubert-large-superb-er", revision="f" * 40)
    with pytest.raises(ModelLoadError, match=f"revision {'f' * 40}"):
        TransformersModel.load(pinned, models_dir=str(tmp_path))


# -- labels by name -----------------------------------------------------------------------------


def test_labels_are_mapped_by_name_not_index(tmp_path):
    orders = [("neu", "hap", "ang", "sad"), ("ang", "hap", "neu", "sad")]
    tops = []
    for n, order in enumerate(orders):
        directory = tiny_models.save_superb_like(tmp_path / f"m{n}", labels=order, bias=one_hot(order.index("ang"), 4))
        model = TransformersModel.load(ModelSpec(f"m{n}", "M", "transformers", str(directory)))
        output = model(speech_like(1.0))
        assert output.confidence > 0.99
        tops.append(output.top_label)
    assert tops == ["angry", "angry"]


def test_labels_from_models_toml_override_generic_names(tmp_path):
    directory = tiny_models.save_superb_like(tmp_path / "m", labels=("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3"))
    with pytest.raises(ModelLoadError, match="set `labels = \\[...\\]`"):
        TransformersModel.load(ModelSpec("m", "M", "transformers", str(directory)))
    spec = ModelSpec("m", "M", "transformers", str(directory), labels=("sad", "neutral", "happy", "angry"))
    assert TransformersModel.load(spec).info.labels == ("neutral", "happy", "sad", "angry")
    with pytest.raises(ModelLoadError, match="gives 2 labels but the model has 4 classes"):
        TransformersModel.load(ModelSpec("m", "M", "transformers", str(directory), labels=("sad", "happy")))


def test_unmapped_classes_are_dropped_and_the_rest_renormalised(tmp_path):
    order = ("neu", "hap", "other", "ang")
    directory = tiny_models.save_superb_like(tmp_path / "m", labels=order, bias=[0.0, 0.0, 5.0, 0.0])
    output = TransformersModel.load(ModelSpec("m", "M", "transformers", str(directory)))(speech_like(1.0))
    assert output.probabilities == pytest.approx({"neutral": 1 / 3, "happy": 1 / 3, "angry": 1 / 3})


# -- attention mask and padding -----------------------------------------------------------------


def test_masked_model_is_padding_invariant(superb_dir):
    model = TransformersModel.load(ModelSpec("h", "H", "transformers", str(superb_dir)))
    short, long = speech_like(0.75, seed=1), speech_like(2.5, seed=2)
    alone = model(short).probabilities
    batched = model.process_signals([long, short])[1].probabilities
    assert batched == pytest.approx(alone, abs=1e-4)
    # The check can fail: padded without the mask, the short clip scores differently.
    model.feature_extractor.return_attention_mask = False
    unmasked = model.label_map.apply(model._forward([long, short])[1]).probabilities
    assert max(abs(unmasked[k] - alone[k]) for k in alone) > 1e-2


def test_int8_quantisation_keeps_the_outputs_close(superb_dir):
    spec = ModelSpec("h", "H", "transformers", str(superb_dir))
    fp32 = TransformersModel.load(spec)
    int8 = TransformersModel.load(spec, quantize="int8")
    assert (fp32.info.extra["dtype"], int8.info.extra["dtype"]) == ("fp32", "int8")
    assert not any(type(m) is torch.nn.Linear for m in int8.module.modules())
    # The feature encoder's convolutions over channels are int8 too; the one over the waveform is not.
    convs = [type(m).__name__ for m in int8.module.modules() if "Conv1d" in type(m).__name__]
    assert convs.count("Int8Conv1d") == len(int8.module.config.conv_dim) - 1 and convs[0] == "WaveformConv1d"
    clips = [speech_like(1.5, seed=s) for s in range(3)]
    logits = fp32._forward(clips), int8._forward(clips)  # probabilities of the classes
    for a, b in zip(*logits, strict=True):
        cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cosine > 0.99 and not np.allclose(a, b, atol=1e-7)  # close, but really int8


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_int8_model_keeps_no_mapping_of_the_fp32_checkpoint(tmp_path):
    # Its own copy of the checkpoint, so that no other test's model maps the same file.
    checkpoint = tiny_models.save_superb_like(tmp_path / "model", gain=100) / "model.safetensors"

    def mapped() -> bool:
        gc.collect()
        return str(checkpoint) in Path("/proc/self/maps").read_text()

    fp32 = TransformersModel.load(ModelSpec("h", "H", "transformers", str(checkpoint.parent)))
    assert mapped()  # fp32 runs on the mapped file: that is its one copy of the weights
    del fp32
    int8 = TransformersModel.load(ModelSpec("h", "H", "transformers", str(checkpoint.parent)), quantize="int8")
    assert not mapped(), "a float tensor of the int8 model still points into the checkpoint"
    assert int8(speech_like(0.5)).probabilities


def test_unmasked_model_is_only_batched_with_equal_lengths(models_dir):
    model = TransformersModel.load(exhubert_spec(window_seconds=None), models_dir=str(models_dir))
    assert model.info.extra["attention_mask"] == "false"
    short, long = speech_like(0.75, seed=1), speech_like(2.5, seed=2)
    alone = model(short)
    batched = model.process_signals([long, short, short.copy()])
    assert batched[1].probabilities == pytest.approx(alone.probabilities, abs=1e-5)
    assert batched[2].arousal == pytest.approx(alone.arousal, abs=1e-5)
    calls = spy_on_forward(model)
    model.process_signals([long, short, short.copy()])
    assert sorted(call["input_values"].shape[0] for call in calls) == [1, 2]


def spy_on_forward(model: TransformersModel) -> list[dict]:
    calls: list[dict] = []
    forward = model.module.forward

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return forward(*args, **kwargs)

    model.module.forward = recording
    return calls


def test_attention_mask_only_where_the_extractor_returns_one(models_dir, superb_dir):
    masked = TransformersModel.load(ModelSpec("h", "H", "transformers", str(superb_dir)))
    group_norm = TransformersModel.load(exhubert_spec(), models_dir=str(models_dir))
    signals = [speech_like(1.0), speech_like(2.0)]
    for model, expect_mask in ((masked, True), (group_norm, False)):
        calls = spy_on_forward(model)
        model.process_signals(signals)
        assert calls and all(("attention_mask" in call) is expect_mask for call in calls)
        assert model.info.extra["attention_mask"] == str(expect_mask).lower()


# -- ExHuBERT: arousal x valence ----------------------------------------------------------------

EXPECTED_SPREAD = {
    ("high", "negative"): {"angry": 1 / 3, "fearful": 1 / 3, "disgust": 1 / 3},
    ("high", "neutral"): {"surprised": 1.0},
    ("high", "positive"): {"happy": 1.0},
    ("low", "negative"): {"sad": 1.0},
    ("low", "neutral"): {"neutral": 1.0},
    ("low", "positive"): {"calm": 1.0},
}


@pytest.mark.parametrize("cell", list(EXPECTED_SPREAD))
def test_exhubert_cells_become_dimensions_and_spread_categories(tmp_path, cell):
    index = [transformers_backend.arousal_valence_cell(name) for name in EXHUBERT_LABELS].index(cell)
    root = tmp_path / "models"
    tiny_models.save_exhubert_like(root / EXHUBERT_ID, bias=one_hot(index, 6))
    tiny_models.save_group_norm_extractor(root / HUBERT_BASE_ID)
    output = TransformersModel.load(exhubert_spec(), models_dir=str(root))(speech_like(1.0))
    expected = dict.fromkeys(CANONICAL_LABELS, 0.0) | EXPECTED_SPREAD[cell]
    assert output.probabilities == pytest.approx(expected, abs=1e-6)
    assert output.arousal == pytest.approx(1.0 if cell[0] == "high" else 0.0, abs=1e-6)
    assert output.valence == pytest.approx({"negative": 0.0, "neutral": 0.5, "positive": 1.0}[cell[1]], abs=1e-6)


def test_exhubert_dimensions_follow_the_cell_probabilities(models_dir):
    model = TransformersModel.load(exhubert_spec(window_seconds=None), models_dir=str(models_dir))
    class_probs = model._forward([speech_like(2.0, seed=3)])[0]
    cells = [transformers_backend.arousal_valence_cell(name) for name in EXHUBERT_LABELS]
    output = model(speech_like(2.0, seed=3))
    high = sum(p for p, cell in zip(class_probs, cells, strict=True) if cell[0] == "high")
    valence = sum(
        p * {"negative": 0, "neutral": 0.5, "positive": 1}[cell[1]] for p, cell in zip(class_probs, cells, strict=True)
    )
    assert 0.0 < output.arousal < 1.0 and 0.0 < output.valence < 1.0
    assert output.arousal == pytest.approx(high, abs=1e-6)
    assert output.valence == pytest.approx(valence, abs=1e-6)
    assert_distribution(output.probabilities, CANONICAL_LABELS)


def test_cell_names_are_recognised():
    cell = transformers_backend.arousal_valence_cell
    assert cell("low_arousal_negative_valence") == ("low", "negative")
    assert cell("Arousal: high / Valence: neutral") == ("high", "neutral")
    assert cell("neutral") is None  # a category, not a cell
    assert build_label_map(["hi_arousal_pos", "lo_arousal_neg"]).arousal is not None
    # A name that mentions arousal but no level is not a cell, so the set is not dimensional.
    assert build_label_map(["arousal", "sad", "happy"]).arousal is None


# -- windowing ----------------------------------------------------------------------------------


def test_long_signals_are_windowed_and_averaged_by_length(superb_dir):
    spec = ModelSpec("h", "H", "transformers", str(superb_dir), window_seconds=1.0)
    model = TransformersModel.load(spec)
    signal = speech_like(3.3, seed=4)
    windows = model.windows(len(signal))
    assert windows[0] == (0, SR) and windows[-1] == (len(signal) - SR, len(signal))
    assert all(end - start == SR for start, end in windows)
    overlaps = [previous_end - start for (_, previous_end), (start, _) in itertools.pairwise(windows)]
    assert min(overlaps) >= SR * transformers_backend.MIN_WINDOW_OVERLAP
    assert max(overlaps) - min(overlaps) <= 1  # spread evenly
    # As few as possible: one window fewer could not keep the overlap.
    fewer = len(windows) - 1
    assert (len(signal) - SR) / (fewer - 1) > SR * (1 - transformers_backend.MIN_WINDOW_OVERLAP)
    # ExHuBERT's case scaled down (5 s in 3 s windows): two windows, 6 s of audio, not three.
    assert model.windows(SR * 5 // 3) == [(0, SR), (SR * 5 // 3 - SR, SR * 5 // 3)]
    assert model.windows(2 * SR) == [(0, SR), (SR // 2, SR * 3 // 2), (SR, 2 * SR)]

    whole = ModelSpec("h", "H", "transformers", str(superb_dir))
    unwindowed = TransformersModel.load(whole)
    parts = [unwindowed(signal[start:end]).probabilities for start, end in windows]
    expected = {label: np.mean([part[label] for part in parts]) for label in parts[0]}
    output = model(signal)
    assert output.probabilities == pytest.approx(expected, abs=1e-5)
    assert output.probabilities != pytest.approx(unwindowed(signal).probabilities, abs=1e-4)
    # A clip no longer than the window is analysed whole.
    assert model(signal[:SR]).probabilities == pytest.approx(unwindowed(signal[:SR]).probabilities, abs=1e-6)


def test_results_come_back_in_input_order(superb_dir):
    model = TransformersModel.load(ModelSpec("h", "H", "transformers", str(superb_dir), window_seconds=1.0))
    signals = [speech_like(seconds, seed=n) for n, seconds in enumerate((0.6, 2.7, 0.02, 1.4))]
    together = model.process_signals(signals)
    assert [o.probabilities for o in together] == [pytest.approx(model(s).probabilities, abs=1e-4) for s in signals]


def test_wrong_sampling_rate_is_refused(superb_dir):
    model = TransformersModel.load(ModelSpec("h", "H", "transformers", str(superb_dir)))
    with pytest.raises(ValueError, match="16000 Hz"):
        model.process_signals([speech_like(1.0)], 8000)


# -- failing fast and saying how to fix it -------------------------------------------------------


def test_missing_model_fails_fast_offline_with_the_fix(tmp_path):
    spec = ModelSpec("x", "X", "transformers", "nobody/not-downloaded", revision="abc")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        TransformersModel.load(spec, models_dir=str(tmp_path))
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "python -m emotion_service.download --preset full" in message
    assert "MODELS_DIR" in message and "nobody/not-downloaded/" in message


def test_broken_local_directory_names_the_directory(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", "utf-8")
    with pytest.raises(ModelLoadError, match="does not hold a loadable model"):
        TransformersModel.load(ModelSpec("b", "B", "transformers", str(broken)))


def test_hub_probe_uses_hf_endpoint_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example:8443")
    monkeypatch.setattr(transformers_backend, "_hub_reachable", None)
    probes = []

    def refuse(address, timeout):
        probes.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert transformers_backend.hub_reachable() is False
    assert transformers_backend.hub_reachable() is False
    assert probes == [(("mirror.example", 8443), 1.5)]


def test_cuda_is_refused_cleanly_without_a_gpu(superb_dir, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="DEVICE=cpu"):
        TransformersModel.load(ModelSpec("h", "H", "transformers", str(superb_dir)), device="cuda")


# -- download -----------------------------------------------------------------------------------


def test_download_dry_run_prints_the_plan(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("dry run downloaded"))
    assert download.main(["--dry-run", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    revision = load_models_config().models["exhubert"].revision
    assert f"{EXHUBERT_ID} @ {revision}" in out
    assert f"{HUBERT_BASE_ID} @ main (configs only" in out
    assert "superb/hubert-large-superb-er" in out and XLSR_ID in out
    assert str(tmp_path / "superb" / "hubert-large-superb-er") in out
    assert f"MODELS_DIR={tmp_path} MODEL_PRESET=full" in out
    assert not any(tmp_path.iterdir())


def test_download_fetches_into_models_dir_layout(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append((repo, kw)))
    assert download.main(["--models-dir", str(tmp_path)]) == 0
    by_repo = {repo: kw for repo, kw in calls}
    assert by_repo[EXHUBERT_ID]["revision"] == load_models_config().models["exhubert"].revision
    assert by_repo[EXHUBERT_ID]["local_dir"] == str(tmp_path / EXHUBERT_ID)
    assert by_repo[HUBERT_BASE_ID]["allow_patterns"] == ["*.json"]
    assert len(calls) == 4


def test_download_unknown_preset_says_which_exist(capsys):
    assert download.main(["--dry-run", "--preset", "nope"]) == 2
    assert "choose one of" in capsys.readouterr().err
