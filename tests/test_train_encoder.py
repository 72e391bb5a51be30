"""``train fit --kind encoder`` end to end: two tiny generated corpora, a tiny Whisper encoder, seconds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotion_service import train
from emotion_service.models.encoder import EncoderModel
from emotion_service.training import encoder as training

from .test_encoder_model import encoder_dir  # noqa: F401  (fixture)
from .test_train import voice

# Two corpora with different label sets: the second has no "calm" (as CREMA-D has none).
CORPORA = {
    "alpha": {"neutral": (120.0, 4), "calm": (100.0, 3), "angry": (260.0, 20)},
    "beta": {"neutral": (125.0, 4), "angry": (250.0, 18), "sad": (90.0, 2)},
}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> list[Path]:
    out = []
    seed = 0
    for name, classes in CORPORA.items():
        root = tmp_path_factory.mktemp(name)
        (root / "audio").mkdir()
        rows = []
        for speaker in range(4):
            for emotion, (f0, harmonics) in classes.items():
                for take in range(3):
                    seed += 1
                    path = f"audio/{speaker}_{emotion}_{take}.flac"
                    sf.write(root / path, voice(f0 * (1 + 0.04 * speaker), harmonics, seed, seconds=0.8), 16_000)
                    rows.append({"path": path, "speaker": f"{name}_{speaker + 1}", "emotion": emotion})
        with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "speaker", "emotion"])
            writer.writeheader()
            writer.writerows(rows)
        out.append(root / "manifest.csv")
    return out


def test_fit_writes_a_calibrated_head_and_its_card(manifests, encoder_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("EMOTION_SERVICE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "head"
    argv = ["fit", "--kind", "encoder", "--encoder", str(encoder_dir), "--out", str(out), "--depth", "2",
            "--hidden", "32", "--epochs", "6", "--augment", "1", "--inner-folds", "2", "--workers", "1",
            "--test-speakers", "alpha_4,beta_4", "--licence", "MIT (test)", "--attribution", "tiny corpora"]  # fmt: skip
    for manifest in manifests:
        argv += ["--manifest", str(manifest)]
    assert train.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["clip"]) == {manifests[0].parent.name, manifests[1].parent.name}
    report = json.loads((out / "metrics.json").read_text())
    assert report["labels"] == ["neutral", "calm", "sad", "angry"]
    assert report["test_speakers"] == ["alpha_4", "beta_4"]
    # Each corpus is scored over its own labels only.
    beta = report["test"]["clip"][manifests[1].parent.name]
    assert beta["labels"] == ["neutral", "sad", "angry"] and beta["clips"] == 9
    # Synthetic classes this different are told apart, per clip and with the baseline.
    assert beta["ua"] > 0.6 and report["test"]["baseline_balanced"][manifests[1].parent.name]["ua"] > 0.6
    assert 0.05 < report["temperatures"]["clip"] < 20 and 0.05 < report["temperatures"]["baseline"] < 20
    card = (out / "MODEL_CARD.md").read_text()
    assert "Held out for the report only" in card and "tiny corpora" in card and "skewed" in card
    # The head serves through the same model class as the service, with the cached encoder features' numbers.
    model = EncoderModel.load(out, encoder_dir=encoder_dir)
    assert model.labels == ("neutral", "calm", "sad", "angry") and model.info.version == report["model_version"]
    evaluated = train.main(["evaluate", "--model", str(out), "--encoder", str(encoder_dir), "--manifest",
                            str(manifests[1]), "--speakers", "beta_4"])  # fmt: skip
    assert evaluated == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["clip"][manifests[1].parent.name]["ua"] == pytest.approx(beta["ua"], abs=0.15)


def test_features_are_cached_per_clip_and_version(manifests, encoder_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("EMOTION_SERVICE_CACHE", str(tmp_path / "cache"))
    corpus = training.read_corpora(manifests[:1])[0]
    clips = corpus.clips[:3]
    first = training.extract(clips, [[0, 1], [0], [0, 2]], encoder_dir, seed=3, workers=1)
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 5
    again = training.extract(clips, [[0, 1], [0], [0, 2]], encoder_dir, seed=3, workers=1)
    assert sorted((tmp_path / "cache").rglob("*.npy")) == files  # nothing recomputed
    assert all(np.array_equal(a, b) for fa, fb in zip(first, again, strict=True) for a, b in zip(fa, fb, strict=True))
    # A degraded copy differs from the clean clip, and copies are reproducible from the seed alone.
    assert not np.array_equal(first[0][0], first[0][1])
    other_seed = training.extract(clips[:1], [[1]], encoder_dir, seed=4, workers=1)
    assert not np.array_equal(other_seed[0][0], first[0][1])


def test_sampled_baselines_include_the_clip_and_skew_to_one_emotion():
    # Two speakers with 10 clips of each of 4 emotions; only the sampling is tested, not the features.
    y = np.tile(np.repeat(np.arange(4), 10), 2)
    speaker = np.repeat([0, 1], 40)
    data = training.Dataset(
        clips=[None] * 80, corpus=np.zeros(80, int), y=y, speaker=speaker, features=np.zeros((80, 1, 1, 1)),
        mask=np.ones((80, 4), bool), labels=("a", "b", "c", "d"), corpora=[],
    )  # fmt: skip
    config = training.HeadConfig(max_baseline=11, skewed_share=1.0, dominant_share=0.7)
    rows = np.arange(80)
    members, valid = training.sample_baselines(data, rows, config, np.random.default_rng(0))
    assert (members[:, 0] == rows).all() and valid[:, 0].all()
    for r in rows:
        chosen = members[r][valid[r]]
        assert len(set(speaker[chosen])) == 1 and len(set(chosen)) == len(chosen)  # one speaker, no repeats
    big = np.flatnonzero(valid.sum(axis=1) == 11)
    shares = [np.bincount(y[members[r][1:]]).max() / 10 for r in big]
    assert len(big) > 3 and min(shares) == 0.7  # 7 of the 10 others show one emotion
