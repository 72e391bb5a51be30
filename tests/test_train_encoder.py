"""``train fit --kind encoder`` end to end: two tiny generated corpora, a tiny Whisper encoder, seconds."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emotion_service import train
from emotion_service.models.encoder import (
    EmotionHead,
    EncoderModel,
    HeadCheckpoint,
    HeadEnsemble,
    balanced_baseline,
    ramped_weight,
    speaker_baselines,
)
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
            "--test-speakers", "alpha_4,beta_4", "--licence", "MIT (test)", "--attribution", "tiny corpora",
            "--members", "2", "--max-baseline", "8", "--baseline-sizes", "log"]  # fmt: skip
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
    # The baseline weight was chosen on the inner folds, and the held-out clips were also scored speech only.
    assert report["baseline_weight"] in training.BASELINE_WEIGHTS
    assert report["baseline_full_at"] in training.BASELINE_FULL_AT
    # Every weight, whole from the first clip or from each size; on every kind of inner session.
    rules = report["baseline_weights_inner"]
    assert {"0", "1", "2", "1@10", "0.5@60"} <= set(rules) and "0@10" not in rules
    assert len(rules) == 1 + (len(training.BASELINE_WEIGHTS) - 1) * len(training.BASELINE_FULL_AT)
    assert {k.split()[0] for k in rules["1"]} == {name for name, _, _ in training.INNER_SESSIONS}
    assert report["test"]["clip_speech"][manifests[1].parent.name]["clips"] == 9
    card = (out / "MODEL_CARD.md").read_text()
    assert "Held out for the report only" in card and "tiny corpora" in card and "skewed" in card
    assert report["config"]["max_baseline"] == 8 and "subsets of 1-8 of the speaker's clips" in card
    assert "sizes log-uniform" in card
    assert "baseline weight" in card and "silences cut" in card and "each emotion weighing the same" in card
    # The served figures (top label over every output) carry their ECE too.
    served_ece = report["test"]["clip"][manifests[1].parent.name]["ece_served"]
    assert 0 <= served_ece <= 1 and f"(ECE {served_ece:.3f})" in card
    # The command that wrote it can be pasted into a shell (the licence has spaces and brackets).
    assert shlex.split(report["command"]) == ["python", "-m", "emotion_service.train", *argv]
    # `train card` rewrites the same card from metrics.json.
    (out / "MODEL_CARD.md").unlink()
    assert train.main(["card", "--metrics", str(out / "metrics.json")]) == 0
    assert (out / "MODEL_CARD.md").read_text() == card
    # The head serves through the same model class as the service, with the cached encoder features' numbers.
    model = EncoderModel.load(out, encoder_dir=encoder_dir)
    assert model.labels == ("neutral", "calm", "sad", "angry") and model.info.version == report["model_version"]
    assert model.checkpoint.baseline_weight == report["baseline_weight"] and model.checkpoint.baseline == "labels"
    assert model.checkpoint.baseline_full_at == report["baseline_full_at"]
    # Two heads from seeds 0 and 1 answer as one: different weights, the card says so.
    assert model.checkpoint.members == 2 and len(model.head.members) == 2
    first, second = (m.clip[1].weight for m in model.head.members)
    assert not torch.allclose(first, second)
    assert "2 such heads, trained from seeds 0-1" in card
    evaluated = train.main(["evaluate", "--model", str(out), "--encoder", str(encoder_dir), "--manifest",
                            str(manifests[1]), "--speakers", "beta_4"])  # fmt: skip
    assert evaluated == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["clip"][manifests[1].parent.name]["ua"] == pytest.approx(beta["ua"], abs=0.15)
    balanced = report["test"]["baseline_balanced"][manifests[1].parent.name]["ua"]
    assert again["baseline_balanced"][manifests[1].parent.name]["ua"] == pytest.approx(balanced, abs=0.15)


def test_a_reused_head_keeps_its_network_and_chooses_its_baseline_rule_afresh(
    manifests,
    encoder_dir,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("EMOTION_SERVICE_CACHE", str(tmp_path / "cache"))
    recipe = ["--kind", "encoder", "--encoder", str(encoder_dir), "--depth", "2", "--hidden", "16", "--epochs", "2",
              "--augment", "1", "--inner-folds", "2", "--workers", "1", "--test-speakers", "alpha_4,beta_4",
              "--members", "2"]  # fmt: skip
    for manifest in manifests:
        recipe += ["--manifest", str(manifest)]
    first, second = tmp_path / "first", tmp_path / "second"
    assert train.main(["fit", *recipe, "--out", str(first), "--version", "tiny-1.0"]) == 0
    # Marked, so that a network trained afresh by the same recipe (the same numbers) could not pass for it.
    old = HeadCheckpoint.from_file(first / "head.pt")
    key = next(k for k, v in old.state.items() if v.is_floating_point())
    old.state[key] = old.state[key] + 0.5
    old.to_file(first / "head.pt")
    old = EncoderModel.load(first, encoder_dir=encoder_dir).checkpoint
    # Another seed trains other inner folds and would train another network: the reused one stays.
    argv = ["fit", *recipe, "--out", str(second), "--version", "tiny-1.1", "--reuse-head", str(first)]
    with pytest.raises(SystemExit, match="another recipe.*'seed': \\(0, 1\\)"):
        train.main([*argv, "--seed", "1"])
    assert not (second / "head.pt").exists()
    assert train.main(argv) == 0
    new = EncoderModel.load(second, encoder_dir=encoder_dir).checkpoint
    assert new.state.keys() == old.state.keys()
    assert all(torch.equal(new.state[k], old.state[k]) for k in old.state)
    assert np.array_equal(new.mean, old.mean) and np.array_equal(new.std, old.std)
    report = json.loads((second / "metrics.json").read_text())
    assert report["network_from"] == old.version and new.version.startswith("tiny-1.1+")
    assert report["baseline_full_at"] in training.BASELINE_FULL_AT and report["baseline_weights_inner"]
    assert report["temperatures"] == {"clip": new.temperature_clip, "baseline": new.temperature_baseline}
    assert f"The network is that of `{old.version}`" in (second / "MODEL_CARD.md").read_text()
    assert "The network is that of" not in (first / "MODEL_CARD.md").read_text()
    # A folder without a head is named as such.
    with pytest.raises(SystemExit, match="name a head's folder"):
        train.main(["fit", *recipe, "--out", str(tmp_path / "third"), "--reuse-head", str(tmp_path)])


def test_fit_refuses_no_heads_before_encoding(manifests, encoder_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("EMOTION_SERVICE_CACHE", str(tmp_path / "cache"))
    argv = ["fit", "--kind", "encoder", "--encoder", str(encoder_dir), "--out", str(tmp_path / "head"),
            "--manifest", str(manifests[0]), "--members", "0"]  # fmt: skip
    with pytest.raises(SystemExit, match="--members 1 or more"):
        train.main(argv)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "head").exists()


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
    # The speech-only version is the clip with its silences cut: its own file, its own feature.
    quiet = np.zeros(4000, dtype=np.float32)  # the tiny encoder takes at most 1 s
    padded = tmp_path / "padded.wav"
    sf.write(padded, np.concatenate([quiet, voice(150.0, 10, 7, seconds=0.5), quiet]), 16_000)
    clip = training.Clip(padded, "alpha_1", "neutral")
    both = training.extract([clip], [[0, training.SPEECH]], encoder_dir, seed=3, workers=1)
    assert len(sorted((tmp_path / "cache").rglob("*.npy"))) == 8
    assert not np.array_equal(both[0][0], both[0][1])
    assert np.array_equal(
        training.extract([clip], [[training.SPEECH]], encoder_dir, seed=3, workers=1)[0][0], both[0][1]
    )


def calibrated_logits(rng: np.random.Generator, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Two classes whose true probability follows the logits at ``scale``: NLL is lowest at T = 1 / scale."""
    margin = rng.normal(0.0, 3.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-scale * margin))).astype(int)
    return np.stack([np.zeros(n), margin], axis=1), y


def test_a_large_corpus_does_not_set_the_confidence_of_a_small_one():
    from emotion_service.training.common import fit_temperature

    rng = np.random.default_rng(0)
    big, small = calibrated_logits(rng, 4000, 0.4), calibrated_logits(rng, 200, 1.0)
    z, y = np.concatenate([big[0], small[0]]), np.concatenate([big[1], small[1]])
    groups = np.repeat([0, 1], [4000, 200])
    pooled, balanced = fit_temperature(z, y), fit_temperature(z, y, groups)
    assert pooled == pytest.approx(fit_temperature(*big), rel=0.15)  # the large corpus decides alone
    assert fit_temperature(*small) < balanced < pooled  # each corpus weighs the same


def test_a_ramped_temperature_is_fitted_at_the_whole_weight():
    from emotion_service.training.common import fit_temperature

    rng = np.random.default_rng(1)
    # Rows at share 0 are calibrated at the clip path's temperature 1; those at share 1 need 2.5,
    # those at share 0.5 need 1.75 (halfway); one temperature for all lies between.
    parts = [calibrated_logits(rng, 3000, scale) for scale in (1.0, 1 / 1.75, 1 / 2.5)]
    z, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    shares = np.repeat([0.0, 0.5, 1.0], 3000)
    whole = fit_temperature(z, y, start=1.0, shares=shares)
    assert whole == pytest.approx(2.5, rel=0.1)
    assert 1.2 < fit_temperature(z, y) < whole * 0.9


def two_corpora_in_sessions(n: int = 40) -> tuple[training.Dataset, np.ndarray, np.ndarray, np.ndarray]:
    """Two corpora of ``2 n`` clips, half in balanced sessions and half in skewed ones, two labels.

    Returns the data, each clip's kind of session, clip-path logits right by a margin of 1 except
    on a quarter of the balanced clips (wrong by 1), and those clips' rows.
    """
    corpus = np.repeat([0, 0, 1, 1], n)
    kinds = np.tile(np.repeat(["balanced", "skewed"], n), 2)
    y = np.tile(np.repeat([0, 1], n // 2), 4)
    data = training.Dataset(
        clips=[None] * 4 * n, corpus=corpus, y=y, speaker=np.zeros(4 * n, int), features=np.zeros((4 * n, 1, 1, 1)),
        mask=np.ones((4 * n, 2), bool), labels=("a", "b"),
        corpora=[training.Corpus("one", [], ("a", "b")), training.Corpus("two", [], ("a", "b"))],
    )  # fmt: skip
    alone = np.zeros((4 * n, 2))
    alone[np.arange(4 * n), y] = 1.0
    wrong = np.flatnonzero(kinds == "balanced")[::4]
    alone[wrong] = alone[wrong][:, ::-1]
    return data, kinds, alone, wrong


def test_the_baseline_weight_never_lets_a_session_kind_do_worse():
    # Two corpora; the baseline path's correction helps balanced sessions of both, but at full
    # weight flips clips of corpus 1's skewed sessions. Half of it helps without harming anyone.
    data, kinds, alone, wrong = two_corpora_in_sessions()
    n, y, corpus = 40, data.y, data.corpus
    correction = np.zeros((4 * n, 2))
    correction[wrong, y[wrong]] = 5.0  # which the baseline puts right from weight 0.25 (margin 5 w - 1)
    hurt = np.flatnonzero((kinds == "skewed") & (corpus == 1))[::5]
    correction[hurt, 1 - y[hurt]] = 2.5  # but flips a fifth of corpus two's skewed clips from 0.5 (margin 1 - 2.5 w)
    rule, table = training.choose_baseline_weight(data, np.arange(4 * n), alone + correction, alone, kinds)
    assert rule == (0.25, 0)  # 0 gains nothing, 0.5 and more harm corpus two's skewed sessions
    assert table["1"]["skewed two"] < 0 and table["0.25"]["balanced one"] > 0


def test_a_young_baseline_gets_less_of_the_baseline_path():
    # Balanced sessions of 60 clips, whose wrong clips the baseline puts right from weight 2/3, and
    # skewed ones of 10, a fifth of whose clips it flips from weight 0.4: no constant weight both
    # helps and harms no one, a weight ramped up to its whole over the first clips does.
    data, kinds, alone, wrong = two_corpora_in_sessions()
    n, y = 40, data.y
    sizes = np.where(kinds == "balanced", 60, 10)
    correction = np.zeros((4 * n, 2))
    correction[wrong, y[wrong]] = 1.5  # margin 1.5 w - 1
    hurt = np.flatnonzero(kinds == "skewed")[::5]
    correction[hurt, 1 - y[hurt]] = 2.5  # margin 1 - 2.5 w
    (weight, full_at), table = training.choose_baseline_weight(
        data, np.arange(4 * n), alone + correction, alone, kinds, sizes
    )
    assert full_at > 0 and weight > 2 / 3  # the balanced sessions' clips put right ...
    assert training.ramped_weight(weight, full_at, 10) < 0.4  # ... and no skewed clip flipped
    assert (weight, full_at) == (0.75, 20)  # the first such rule (all score the same)
    assert table["0.75@20"]["balanced one"] > 0 and table["0.75@20"]["skewed two"] == 0
    assert table["1"]["skewed two"] < 0 and table["0.25"]["balanced one"] == 0
    # Without sizes, every rule is a constant weight.
    rule, table = training.choose_baseline_weight(data, np.arange(4 * n), alone + correction, alone, kinds)
    assert rule == (0.0, 0) and "1@10" not in table


def test_the_served_weight_ramps_with_the_baseline_clips():
    assert [ramped_weight(2.0, 30, n) for n in (3, 15, 30, 60)] == [0.2, 1.0, 2.0, 2.0]
    assert ramped_weight(1.0, 0, 3) == 1.0


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


@pytest.mark.parametrize("sizes", training.BASELINE_SIZES)
def test_baseline_sizes_span_one_to_the_most_and_log_keeps_young_baselines_common(sizes):
    # One speaker with 80 clips of 4 emotions: every size up to 64 can be drawn.
    data = training.Dataset(
        clips=[None] * 80, corpus=np.zeros(80, int), y=np.repeat(np.arange(4), 20), speaker=np.zeros(80, int),
        features=np.zeros((80, 1, 1, 1)), mask=np.ones((80, 4), bool), labels=("a", "b", "c", "d"), corpora=[],
    )  # fmt: skip
    config = training.HeadConfig(max_baseline=64, baseline_sizes=sizes)
    rows = np.tile(np.arange(80), 25)
    _, valid = training.sample_baselines(data, rows, config, np.random.default_rng(0))
    size = valid.sum(axis=1)
    assert size.min() == 1 and size.max() == 64
    assert (valid == (np.arange(64) < size[:, None])).all()  # the used members come first
    # Log-uniform: P(size <= 16) = ln 17 / ln 65 = 0.68; uniform: 16 / 64 = 0.25.
    young = np.mean(size <= 16)
    assert young == pytest.approx(0.68 if sizes == "log" else 0.25, abs=0.04)
    with pytest.raises(ValueError, match="baseline_sizes must be one of"):
        training.HeadConfig(baseline_sizes="linear")


def test_baselines_of_sessions_listed_flat_are_those_of_each_session_alone():
    torch.manual_seed(0)
    head = HeadEnsemble([EmotionHead(3, 4, 5, hidden=8), EmotionHead(3, 4, 5, hidden=8)]).eval()
    x = torch.randn(9, 3, 4)
    owner = torch.tensor([0, 0, 0, 2, 2, 0, 2, 2, 2])  # session 1 holds no clip
    with torch.inference_mode():
        balanced = speaker_baselines(head, x, owner, 3, "labels", shrink=2.0)
        plain = speaker_baselines(head, x, owner, 3, "mean", shrink=2.0)
        for s, clips in ((0, 4), (2, 5)):
            mine = x[owner == s]
            expected = balanced_baseline(*head.class_statistics(mine), 2.0)  # the einsum over one session
            assert torch.allclose(balanced[s], expected, atol=1e-6)
            assert torch.allclose(plain[s], mine.sum(0) / (clips + 2.0), atol=1e-6)
            assert not torch.allclose(balanced[s], plain[s], atol=1e-3)
    assert not balanced[1].any() and not plain[1].any()  # no clip: the population (0)


def test_a_corpus_without_calm_teaches_neutral_or_calm_and_never_leaves_a_label_free():
    # Corpus one has every label; corpus two has no calm and no surprised (as CREMA-D).
    labels = ("neutral", "calm", "happy", "surprised")
    y = np.array([0, 1, 2, 3, 0, 2])
    corpus = np.array([0, 0, 0, 0, 1, 1])
    mask = np.array([[True] * 4] * 4 + [[True, False, True, False]] * 2)
    data = training.Dataset(
        clips=[None] * 6, corpus=corpus, y=y, speaker=np.zeros(6, int), features=np.zeros((6, 1, 1, 1)),
        mask=mask, labels=labels, corpora=[],
    )  # fmt: skip
    allowed = training.allowed_labels(data)
    assert allowed.tolist() == [
        [True, False, False, False],  # corpus one's neutral is not calm: it has calm
        [False, True, False, False],
        [False, False, True, False],
        [False, False, False, True],
        [True, True, False, False],  # corpus two's neutral may be calm
        [False, False, True, False],  # and its happy is not surprised: nothing files surprised under happy
    ]
    logits = torch.randn(6, 4)
    target = torch.from_numpy(y)
    one = torch.nn.functional.one_hot(target, 4).bool()
    expected = torch.nn.functional.cross_entropy(logits, target, reduction="none", label_smoothing=0.05)
    assert torch.allclose(training.set_cross_entropy(logits, one, 0.05), expected, atol=1e-6)
    p = torch.softmax(logits, dim=-1)
    either = training.set_cross_entropy(logits, torch.from_numpy(allowed), 0.0)
    assert either[4].item() == pytest.approx(-torch.log(p[4, 0] + p[4, 1]).item(), rel=1e-5)
    # Every label is in the loss: mass on surprised costs a corpus-two happy clip.
    pushed = logits.clone()
    pushed[5, 3] += 5.0
    assert training.set_cross_entropy(pushed, torch.from_numpy(allowed), 0.0)[5] > either[5]


def test_the_served_metrics_take_the_top_of_every_label():
    labels = ("neutral", "calm", "happy", "surprised")
    own = ("neutral", "happy")
    y = np.array([0, 0, 1, 1])  # indexes own
    logits = np.array([[0, 5, 0, 0], [5, 0, 0, 0], [0, 0, 5, 0], [0, 0, 4, 5]], dtype=float)
    served = training.served(logits, y, labels, own)
    # calm counts as neutral in a corpus without calm; surprised is wrong.
    assert served["ua_served"] == pytest.approx(0.75)
    # The confidence is the top output's probability over all four, right 3 times in 4.
    confidence = np.exp(5) / (np.exp(5) + 3)
    last = np.exp(5) / (np.exp(5) + np.exp(4) + 2)
    expected = abs(3 / 3 - confidence) * 3 / 4 + abs(0 - last) / 4  # two bins: 0.9–1 and 0.7–0.8
    assert served["ece_served"] == pytest.approx(expected)
    # A higher temperature lowers every confidence: the three right answers, nearly sure at 1, now
    # fall well short of their accuracy, and the ECE rises.
    assert training.served(logits, y, labels, own, temperature=3.0)["ece_served"] > expected + 0.1
