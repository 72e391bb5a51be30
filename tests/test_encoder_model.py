"""The encoder model: our Whisper encoder against transformers', the head, int8, windows, loading.

Tiny encoders of the real class (``transformers``' ``WhisperEncoder``, 1 s of positions) are built
and saved by the tests themselves; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from emotion_service.config import ModelSpec
from emotion_service.labels import CANONICAL_LABELS
from emotion_service.models.base import BaselineStats
from emotion_service.models.encoder import (
    EmotionHead,
    EncoderModel,
    HeadCheckpoint,
    HeadEnsemble,
    balanced_baseline,
    ramped_temperature,
)
from emotion_service.models.optimize import native_bf16
from emotion_service.models.registry import BACKENDS
from emotion_service.models.whisper_encoder import CALIBRATION_FILE, Int8Calibration, WhisperEncoder, windows

from .signals import voice_like

RATE = 16_000


def tiny_config() -> WhisperConfig:
    return WhisperConfig(
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=50,  # 1 s
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=64,
    )


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny Whisper encoder saved as the shipped one is: config.json + fp16 model.safetensors."""
    torch.manual_seed(0)
    config = tiny_config()
    reference = HFWhisperEncoder(config).eval()
    folder = tmp_path_factory.mktemp("encoder")
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    save_file({k: v.half().contiguous() for k, v in reference.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


def _reference(encoder_dir) -> HFWhisperEncoder:
    from safetensors.torch import load_file

    reference = HFWhisperEncoder(tiny_config()).eval()
    reference.load_state_dict({k: v.float() for k, v in load_file(str(encoder_dir / "model.safetensors")).items()})
    return reference


def test_our_encoder_computes_what_transformers_computes(encoder_dir):
    ours = WhisperEncoder.load(encoder_dir)
    signal = voice_like(1.0, f0=180.0, seed=1)
    mel, lengths = ours.features([signal])
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=1, n_samples=RATE)
    theirs_mel = torch.from_numpy(extractor(signal, sampling_rate=RATE, return_tensors="np").input_features)
    assert mel.shape == theirs_mel.shape == (1, 80, 100)
    assert torch.allclose(mel, theirs_mel, atol=1e-4)
    with torch.inference_mode():
        expected = _reference(encoder_dir)(theirs_mel, output_hidden_states=True).hidden_states
        got = ours(theirs_mel, lengths)
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_a_clip_in_a_batch_gets_what_it_gets_alone(encoder_dir):
    ours = WhisperEncoder.load(encoder_dir)
    short, long = voice_like(0.4, seed=2), voice_like(0.9, f0=220.0, seed=3)
    with torch.inference_mode():
        together = ours.pooled([short, long])
        alone = torch.cat([ours.pooled([short]), ours.pooled([long])])
    assert together.shape == (2, 3, 128)
    assert torch.allclose(together, alone, atol=1e-4)


def test_a_shallower_encoder_stops_early(encoder_dir):
    full, shallow = WhisperEncoder.load(encoder_dir), WhisperEncoder.load(encoder_dir, depth=1)
    clip = voice_like(0.8, seed=4)
    with torch.inference_mode():
        a, b = full.pooled([clip]), shallow.pooled([clip])
    assert len(shallow.layers) == 1 and b.shape == (1, 2, 128)
    assert torch.allclose(a[:, :2], b, atol=1e-5)


def test_a_folder_that_is_not_an_encoder_is_refused(tmp_path, encoder_dir):
    (tmp_path / "config.json").write_text((encoder_dir / "config.json").read_text())
    save_file({"something.else": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="is not a Whisper encoder"):
        WhisperEncoder.load(tmp_path)


def test_windows_cover_long_audio_with_overlap():
    assert windows(RATE, 30.0) == [(0, RATE)]
    spans = windows(70 * RATE, 30.0)
    assert spans[0][0] == 0 and spans[-1][1] == 70 * RATE
    assert all(end - start == 30 * RATE for start, end in spans)
    assert all(b[0] <= a[1] - 0.25 * 30 * RATE for a, b in zip(spans, spans[1:], strict=False))


def head_checkpoint(encoder_dir, labels=CANONICAL_LABELS, seed=0, reads="both", members=1) -> HeadCheckpoint:
    """A random head (or ensemble of ``members`` heads; one is saved with a single head's keys, as
    heads were before ensembles) over the tiny encoder, with the standardisation of a few generated clips."""
    torch.manual_seed(seed)
    encoder = WhisperEncoder.load(encoder_dir)
    with torch.inference_mode():
        pooled = encoder.pooled([voice_like(0.5 + 0.08 * i, f0=120.0 + 30 * i, seed=i) for i in range(6)]).numpy()
    heads = [EmotionHead(3, 128, len(labels), hidden=16, reads=reads) for _ in range(members)]
    head = heads[0] if members == 1 else HeadEnsemble(heads)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    return HeadCheckpoint(
        labels=tuple(labels),
        depth=2,
        mean=pooled.mean(0),
        std=pooled.std(0) + 1e-3,
        state=head.state_dict(),
        hidden=16,
        temperature_clip=1.2,
        temperature_baseline=0.9,
        min_baseline=3,
        version="tiny-1",
        licence="MIT (test)",
        commercial_use=True,
        attribution="test",
        reads=reads,
        members=members,
    )


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory, encoder_dir):
    folder = tmp_path_factory.mktemp("head")
    head_checkpoint(encoder_dir).to_file(folder / "head.pt")
    return folder


def test_the_model_answers_through_the_common_interface(head_dir, encoder_dir):
    model = EncoderModel.load(head_dir, encoder_dir=encoder_dir)
    clips = [voice_like(0.7, f0=140.0 + 40 * i, seed=10 + i) for i in range(4)]
    outputs = model.process_signals(clips)
    assert len(outputs) == 4
    for output in outputs:
        assert set(output.probabilities) == set(CANONICAL_LABELS)
        assert abs(sum(output.probabilities.values()) - 1) < 1e-5
    assert model.info.version == "tiny-1" and model.info.commercial_use and model.info.extra["dtype"] == "fp32"
    # One clip alone is what it is in a batch of independent clips.
    alone = model(clips[0], RATE)
    assert alone.probabilities == pytest.approx(outputs[0].probabilities, abs=1e-5)
    # A session of one speaker is judged against its own baseline: different answers.
    session = model.process_signals(clips, same_speaker=True)
    assert any(
        abs(session[i].probabilities[label] - outputs[i].probabilities[label]) > 1e-3
        for i in range(4)
        for label in CANONICAL_LABELS
    )


def test_a_young_baseline_is_not_used(head_dir, encoder_dir):
    model = EncoderModel.load(head_dir, encoder_dir=encoder_dir)
    clips = [voice_like(0.7, f0=150.0 + 20 * i, seed=20 + i) for i in range(2)]
    features = model.standardised(clips)
    young = BaselineStats.of(features)  # 2 clips, the head needs 3
    assert model.score(features, young)[0].probabilities == pytest.approx(model.score(features)[0].probabilities)
    grown = young + BaselineStats.of(model.standardised([voice_like(0.8, f0=300.0, seed=30)]))
    assert model.score(features, grown)[0].probabilities != pytest.approx(model.score(features)[0].probabilities)


def test_a_balanced_baseline_does_not_make_the_usual_voice_of_a_session_that_leans_one_way():
    calm, angry = torch.full((1, 2), -1.0), torch.full((1, 2), 3.0)
    # Seven angry clips and three calm ones, the labels certain: each label weighs the same.
    p = torch.tensor([[0.0, 1.0]] * 7 + [[1.0, 0.0]] * 3)
    x = torch.stack([angry] * 7 + [calm] * 3)
    sums = torch.einsum("mc,msw->csw", p, x)
    baseline = balanced_baseline(sums, p.sum(0), shrink=0.0, prior=1e-6)
    assert baseline[0].tolist() == pytest.approx([1.0, 1.0])  # (calm + angry) / 2, not 0.7 angry
    plain = x.mean(0)
    assert plain[0].tolist() == pytest.approx([1.8, 1.8])
    # A label heard in a small fraction of one clip counts for little; shrink pulls towards 0.
    p2 = torch.tensor([[0.02, 0.98]] * 5)
    x2 = torch.stack([angry] * 4 + [calm])
    b2 = balanced_baseline(torch.einsum("mc,msw->csw", p2, x2), p2.sum(0), shrink=0.0)
    assert b2[0, 0] > 2.0
    assert balanced_baseline(sums, p.sum(0), shrink=10.0).abs().max() < baseline.abs().max() / 2


@pytest.mark.parametrize(("reads", "members"), [("both", 1), ("difference", 1), ("difference", 3)])
def test_a_head_with_label_baselines_keeps_per_label_sums_that_add_up(encoder_dir, tmp_path, reads, members):
    checkpoint = head_checkpoint(encoder_dir, reads=reads, members=members)
    checkpoint.baseline = "labels"
    checkpoint.to_file(tmp_path / "head.pt")
    model = EncoderModel.load(tmp_path, encoder_dir=encoder_dir)
    clips = [voice_like(0.7, f0=150.0 + 25 * i, seed=40 + i) for i in range(5)]
    features = model.standardised(clips)
    stats = model.baseline_stats(features)
    labels = len(model.labels)
    # Kept projected: (labels, members * hidden), not every state's sums.
    assert stats.clips == 5 and stats.total.shape == (labels, 16 * members) and stats.mass.shape == (labels,)
    assert stats.mass.sum() == pytest.approx(5.0, rel=1e-5)  # each clip's probabilities sum to 1
    parts = model.baseline_stats(features[:2]) + model.baseline_stats(features[2:])
    assert parts.clips == 5 and np.allclose(parts.total, stats.total, atol=1e-5) and np.allclose(parts.mass, stats.mass)
    alone = model.score(features)
    judged = model.score(features, stats)
    # The projection gives what the full per-label sums give (the path the trainer scores).
    head = model.head
    x = torch.from_numpy(features)
    with torch.inference_mode():
        full = balanced_baseline(*head.class_statistics(x), model.checkpoint.shrink)
        expected = torch.softmax(head(x, full.expand_as(x)) / model.checkpoint.temperature_baseline, dim=-1)
    assert [o.probabilities[k] for o in judged for k in model.labels] == pytest.approx(
        expected.flatten().tolist(), abs=1e-5
    )
    assert any(
        abs(a.probabilities[k] - b.probabilities[k]) > 1e-3
        for a, b in zip(alone, judged, strict=True)
        for k in a.probabilities
    )
    # A path that reads only the difference has a first layer half as wide.
    first = model.head.members[0]
    assert first.relative[1].in_features == (1 if reads == "difference" else 2) * first.clip[1].in_features
    # An ensemble answers with its members' mean logits, against a baseline formed from their mean
    # clip probabilities.
    with torch.inference_mode():
        each = [m(x, full.expand_as(x)) for m in model.head.members]
    assert len(each) == members
    mean_logits = torch.stack(each).mean(dim=0) / model.checkpoint.temperature_baseline
    assert torch.softmax(mean_logits, dim=-1).flatten().tolist() == pytest.approx(expected.flatten().tolist(), abs=1e-5)
    young = model.baseline_stats(features[:2])
    assert model.score(features[:2], young)[0].probabilities == pytest.approx(alone[0].probabilities, abs=1e-5)
    # A batch of one speaker is judged against the same per-label baseline.
    session = model.process_signals(clips, same_speaker=True)
    assert session[0].probabilities == pytest.approx(judged[0].probabilities, abs=1e-5)


def test_the_baseline_path_is_ramped_in_over_a_young_baselines_clips(encoder_dir, tmp_path):
    checkpoint = head_checkpoint(encoder_dir, reads="difference", members=2)
    checkpoint.baseline, checkpoint.baseline_weight = "labels", 2.0
    clips = [voice_like(0.7, f0=150.0 + 25 * i, seed=60 + i) for i in range(5)]
    served = {}
    for full_at in (0, 10, 20):
        checkpoint.baseline_full_at = full_at
        checkpoint.to_file(tmp_path / "head.pt")
        model = EncoderModel.load(tmp_path, encoder_dir=encoder_dir)
        features = model.standardised(clips)
        served[full_at] = [
            o.probabilities[k] for o in model.score(features, model.baseline_stats(features)) for k in model.labels
        ]
    x = torch.from_numpy(features)
    with torch.inference_mode():
        full = balanced_baseline(*model.head.class_statistics(x), model.checkpoint.shrink).expand_as(x)
        # 5 clips: weight 2, 2 * 5 / 10, 2 * 5 / 20; the temperature as far from the clip path's
        # (1.2) towards the baseline's at the whole weight (0.9).
        for full_at, weight, temperature in ((0, 2.0, 0.9), (10, 1.0, 1.05), (20, 0.5, 1.125)):
            assert ramped_temperature(1.2, 0.9, full_at, 5) == pytest.approx(temperature)
            expected = torch.softmax(model.head(x, full, weight) / temperature, dim=-1)
            assert served[full_at] == pytest.approx(expected.flatten().tolist(), abs=1e-5)
    assert served[0] != pytest.approx(served[20], abs=1e-3)
    # A checkpoint written before the ramp existed loads with the whole weight from the first clip.
    raw = torch.load(tmp_path / "head.pt", weights_only=True)
    del raw["baseline_full_at"]
    torch.save(raw, tmp_path / "head.pt")
    assert HeadCheckpoint.from_file(tmp_path / "head.pt").baseline_full_at == 0


def test_long_audio_goes_through_in_windows(head_dir, encoder_dir):
    model = EncoderModel.load(head_dir, encoder_dir=encoder_dir)
    assert model.encoder.max_seconds == pytest.approx(1.0)
    long = np.concatenate([voice_like(1.0, f0=150.0, seed=40), voice_like(1.5, f0=260.0, seed=41)])
    features = model.standardised([long])
    spans = windows(len(long), model.encoder.max_seconds)
    assert len(spans) == 3  # 2.5 s in 1 s windows overlapping by at least a quarter
    expected = np.mean([model.standardised([long[start:end]])[0] for start, end in spans], axis=0)
    assert features.shape == (1, 3, 128)
    assert np.allclose(features[0], expected, atol=2e-4)


def test_int8_stays_close_to_fp32(head_dir, encoder_dir, tmp_path):
    fp32 = EncoderModel.load(head_dir, encoder_dir=encoder_dir)
    clips = [voice_like(0.9, f0=130.0 + 25 * i, seed=50 + i) for i in range(3)]
    reference = fp32.standardised(clips).ravel()
    # Without a calibration beside the encoder every linear layer is int8 as it is; with one, the
    # encoder is smoothed first (fc2 scales its input) and its weights quantised per channel.
    calibrated = tmp_path / "encoder"
    shutil.copytree(encoder_dir, calibrated)
    training = [voice_like(1.0, f0=110.0 + 30 * i, seed=60 + i) for i in range(3)]
    Int8Calibration(WhisperEncoder.load(encoder_dir).activation_peaks(training), 0.8).to_file(
        calibrated / CALIBRATION_FILE
    )
    for folder in (encoder_dir, calibrated):
        int8 = EncoderModel.load(head_dir, encoder_dir=folder, quantize="int8")
        assert int8.info.extra["dtype"] == "int8"
        assert not any(type(m) is torch.nn.Linear for m in int8.encoder.modules())
        fc2 = int8.encoder.layers[1].fc2
        assert isinstance(fc2.linear if folder == calibrated else fc2, DynamicLinear)
        out = int8.standardised(clips).ravel()
        assert float(np.dot(reference, out) / np.linalg.norm(reference) / np.linalg.norm(out)) > 0.99


def test_bf16_runs_where_the_cpu_multiplies_it_and_matches_fp32(head_dir, encoder_dir):
    fp32 = EncoderModel.load(head_dir, encoder_dir=encoder_dir)
    bf16 = EncoderModel.load(head_dir, encoder_dir=encoder_dir, quantize="bf16")
    # Without AVX-512 BF16 or AMX, bf16 would be emulated (slower than fp32): the model stays fp32.
    assert bf16.info.extra["dtype"] == ("bf16" if native_bf16() else "fp32")
    assert bf16.encoder.conv1.weight.dtype == (torch.bfloat16 if native_bf16() else torch.float32)
    clips = [voice_like(0.9, f0=130.0 + 25 * i, seed=60 + i) for i in range(3)]
    a, b = fp32.standardised(clips).ravel(), bf16.standardised(clips).ravel()
    # The tiny random encoder's standardised features magnify rounding; on the shipped encoder and
    # real clips the head's logits agree at cosine 0.9999 (bench/bench_presets.py).
    assert float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) > 0.98


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    plain = tmp_path / "avx2"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    assert not native_bf16(str(plain))
    assert not native_bf16(str(tmp_path / "missing"))
    bf16 = tmp_path / "bf16"
    bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert native_bf16(str(bf16)) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_the_registry_loads_an_encoder_model(head_dir, encoder_dir):
    spec = ModelSpec(
        name="tiny_encoder",
        display_name="Tiny encoder",
        backend="encoder",
        source=str(head_dir),
        encoder=str(encoder_dir),
        licence="MIT",
    )
    model = BACKENDS["encoder"](spec, None, "cpu", "none")
    assert model.info.name == "tiny_encoder" and model.info.display_name == "Tiny encoder"
    assert model(voice_like(0.7, seed=60), RATE).top_label in CANONICAL_LABELS


def test_a_missing_head_says_how_to_train_one(tmp_path, encoder_dir):
    with pytest.raises(FileNotFoundError, match="emotion_service.train fit --kind encoder"):
        EncoderModel.load(tmp_path, encoder_dir=encoder_dir)


def test_long_audio_goes_through_in_bounded_batches(head_dir, encoder_dir, monkeypatch):
    from emotion_service.models import encoder as encoder_module

    model = EncoderModel.load(head_dir, encoder_dir=encoder_dir)
    long = np.concatenate([voice_like(1.0, f0=120.0 + 20 * i, seed=70 + i) for i in range(4)])
    whole = model.standardised([long])
    sizes = []
    real = model.encoder.pooled
    monkeypatch.setattr(model.encoder, "pooled", lambda pieces: sizes.append(len(pieces)) or real(pieces))
    monkeypatch.setattr(encoder_module, "BATCH_SECONDS", 2.0)
    batched = model.standardised([long])
    assert sizes == [2, 2, 1]  # 5 one-second windows, at most 2 s of audio per forward pass
    assert np.allclose(whole, batched, atol=2e-4)
