"""The training command end to end on a tiny generated corpus (seconds, no real data needed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emotion_service import train
from emotion_service.models.bundled import BundledModel

# Class name in the manifest (aliases on purpose) -> (pitch, brightness) of its generated clips.
CLASSES = {"neu": (120.0, 4), "Angry": (260.0, 20), "sadness": (90.0, 2)}


def voice(f0: float, harmonics: int, seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    f0 = f0 * rng.uniform(0.9, 1.1)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, harmonics + 1))
    return (0.1 * tone * np.clip(np.sin(2 * np.pi * 3 * t), 0.1, None) + 0.003 * rng.standard_normal(t.size)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rows = []
    seed = 0
    for speaker in ("spk_1", "spk_2", "spk_3", "spk_4"):
        for emotion, (f0, harmonics) in CLASSES.items():
            for take in range(4):
                seed += 1
                path = f"audio/{speaker}_{emotion}_{take}.flac"
                sf.write(root / path, voice(f0, harmonics, seed), 16_000)
                rows.append({"path": path, "speaker": speaker, "emotion": emotion})
    rows.append({"path": rows[0]["path"], "speaker": "spk_1", "emotion": "boredom"})  # not canonical: skipped
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "speaker", "emotion"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def fit(corpus: Path, out: Path) -> None:
    args = [
        "fit",
        "--manifest",
        str(corpus),
        "--out",
        str(out),
        "--test-speakers",
        "4",
        "--folds",
        "2",
        "--epochs",
        "2",
        "--augment",
        "1",
        "--seed",
        "3",
        "--no-cache",
        "--workers",
        "1",
    ]
    assert train.main(args) == 0


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    fit(corpus, out)
    return out


def test_fit_writes_model_metrics_and_card(trained: Path) -> None:
    assert {p.name for p in trained.iterdir()} == {"model.pt", "metrics.json", "MODEL_CARD.md"}
    model = BundledModel.load(str(trained))
    assert model.labels == ("neutral", "sad", "angry")  # canonical order, aliases mapped
    assert model.info.version.startswith("corpus")
    metrics = json.loads((trained / "metrics.json").read_text("utf-8"))
    assert metrics["test_speakers"] == ["spk_4"]
    assert "spk_4" not in metrics["train_speakers"]
    assert len(metrics["cross_validation"]["folds"]) == 2
    card = (trained / "MODEL_CARD.md").read_text("utf-8")
    for needle in ("Licence", "CC BY-NC-SA", "UA", "ECE", "Confusion matrix", "cross-validation", "retrain"):
        assert needle in card


def test_evaluate_prints_consistent_json(trained: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--same-speaker"]):
        assert (
            train.main(
                [
                    "evaluate",
                    "--model",
                    str(trained / "model.pt"),
                    "--manifest",
                    str(corpus),
                    "--speakers",
                    "spk_4",
                    *extra,
                ]
            )
            == 0
        )
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["clips"] == 12
        assert result["ua"] == pytest.approx(np.mean(list(result["per_class_recall"].values())))
        assert 0.0 <= result["wa"] <= 1.0 and 0.0 <= result["ece"] <= 1.0
        assert set(result["per_class_recall"]) == {"neutral", "sad", "angry"}


def test_fit_is_reproducible(trained: Path, corpus: Path, tmp_path: Path) -> None:
    fit(corpus, tmp_path)
    first = torch.load(trained / "model.pt", weights_only=True)
    second = torch.load(tmp_path / "model.pt", weights_only=True)
    assert first["temperature"] == second["temperature"]
    for key, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][key]), key


def test_metrics_ua_ece() -> None:
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    result = train.metrics(probabilities, np.array([0, 0, 1, 1]), ["neutral", "sad"])
    assert result["per_class_recall"] == {"neutral": 1.0, "sad": 0.5}
    assert result["ua"] == 0.75 and result["wa"] == 0.75
    assert result["confusion"] == [[2, 0], [1, 1]]
    # Bins: 0.9 (right), 0.8 (right), 0.7 (right), 0.6 (wrong): |1-0.9|+|1-0.8|+|1-0.7|+|0-0.6| over 4.
    assert result["ece"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.6) / 4)


def test_manifest_errors(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.csv"
    bad.write_text("file,emotion\nx.flac,angry\n", encoding="utf-8")
    with pytest.raises(ValueError, match="speaker"):
        train.read_manifest(bad)
    clips = [train.Clip(Path("a"), "ravdess_21", "angry"), train.Clip(Path("b"), "ravdess_02", "sad")]
    assert train.select_speakers(clips, "21") == {"ravdess_21"}
    with pytest.raises(ValueError, match="not in the manifest"):
        train.select_speakers(clips, "7")
