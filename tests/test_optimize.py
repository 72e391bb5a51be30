"""int8 quantisation of the linear layers and feature convolutions, and the smoothing of Whisper's
encoder before it: smaller, outputs close to fp32."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.nn.utils import parametrize

from emotion_service.models.optimize import (
    FullRangeDynamicLinear,
    Int8Conv1d,
    SmoothedLinear,
    WaveformConv1d,
    fold_weight_norm,
    native_vnni,
    prepare_for_cpu,
    quantize_int8,
)
from emotion_service.models.whisper_encoder import EncoderConfig, Int8Calibration, WhisperEncoder

from .signals import voice_like


def test_linear_layers_become_int8_and_outputs_stay_close():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256), nn.LayerNorm(256)).eval()
    x = torch.randn(50, 256)

    def size(m: nn.Module) -> int:
        buffer = io.BytesIO()
        torch.save(m.state_dict(), buffer)
        return len(buffer.getvalue())

    fp32_size = size(model)
    with torch.inference_mode():
        reference = model(x)
        quantized = quantize_int8(model)
        out = quantized(x)
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    cosine = torch.nn.functional.cosine_similarity(reference.flatten(), out.flatten(), dim=0)
    assert cosine > 0.99
    assert quantized is model  # in place: no second copy of the weights while loading
    assert size(quantized) < fp32_size / 3


def test_full_range_int8_uses_the_eighth_bit():
    torch.manual_seed(0)

    def model() -> nn.Module:
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 64)).eval()

    x = torch.randn(200, 256)
    with torch.inference_mode():
        reference = model()(x)
        seven = quantize_int8(model())
        eight = quantize_int8(model(), full_range=True)
        error7 = (seven(x) - reference).norm() / reference.norm()
        error8 = (eight(x) - reference).norm() / reference.norm()
    assert all(type(m) is FullRangeDynamicLinear for m in eight.modules() if isinstance(m, DynamicLinear))
    assert not any(type(m) is FullRangeDynamicLinear for m in seven.modules())
    print(f"relative error, 7-bit activations {error7:.4f}, 8-bit {error8:.4f}, VNNI {native_vnni()}")
    if native_vnni():
        assert error8 < 0.8 * error7  # one more bit: about half the rounding error
    else:
        # Without VNNI fbgemm sums pairs of u8 x s8 products in 16 bits, which 8-bit activations
        # overflow: why quantize_int8 gets full_range only where native_vnni() (an AVX2-only EPYC: 0.087 vs 0.028).
        assert error8 > error7


def test_native_vnni_reads_the_cpu_flags(tmp_path):
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f\n")
    vnni = tmp_path / "vnni"
    vnni.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not native_vnni(str(avx2)) and not native_vnni(str(tmp_path / "missing")) and native_vnni(str(vnni))


class FeatureEncoder(nn.Module):
    """The shape of wav2vec2's front end: waveform conv, strided convs, a weight-normed grouped conv."""

    def __init__(self) -> None:
        super().__init__()
        self.waveform = nn.Conv1d(1, 64, 10, 5)
        self.strided = nn.Sequential(nn.Conv1d(64, 64, 3, 2), nn.GELU(), nn.Conv1d(64, 64, 2, 2), nn.GELU())
        self.positional = nn.utils.parametrizations.weight_norm(nn.Conv1d(64, 64, 16, padding=8, groups=4), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.strided(nn.functional.gelu(self.waveform(x)))
        return hidden + self.positional(hidden)[..., :-1]


def test_feature_convolutions_become_int8_except_the_waveform_one():
    torch.manual_seed(0)
    model = FeatureEncoder().eval()
    x = 0.1 * torch.randn(2, 1, 4000)
    with torch.inference_mode():
        reference = model(x)
        quantize_int8(model)
        out = model(x)
    assert type(model.waveform) is WaveformConv1d  # raw audio stays fp32
    assert [type(m) for m in model.strided if not isinstance(m, nn.GELU)] == [Int8Conv1d, Int8Conv1d]
    assert type(model.positional) is nn.Conv1d and not parametrize.is_parametrized(model.positional)
    assert out.shape == reference.shape
    cosine = torch.nn.functional.cosine_similarity(reference.flatten(), out.flatten(), dim=0)
    assert 0.995 < cosine < 1 - 1e-7  # close, but really int8


def test_folding_weight_norm_changes_no_output():
    torch.manual_seed(1)
    model = FeatureEncoder().eval()
    x = torch.randn(1, 1, 2000)
    with torch.inference_mode():
        reference = model(x)
        assert fold_weight_norm(model) == 1
        assert fold_weight_norm(model) == 0
        torch.testing.assert_close(model(x), reference, rtol=1e-6, atol=1e-6)
    with pytest.warns(FutureWarning):  # the older hook form, still found in remote model code
        legacy = nn.utils.weight_norm(nn.Conv1d(4, 4, 3))
    y = torch.randn(1, 4, 10)
    with torch.inference_mode():
        before = legacy(y)
        assert fold_weight_norm(legacy) == 1
        torch.testing.assert_close(legacy(y), before)
    assert "weight_g" not in dict(legacy.named_parameters())


def test_int8_convolution_matches_the_convolution_and_leaves_its_input_alone():
    torch.manual_seed(2)
    conv = nn.Conv1d(32, 48, 3, 2).eval()
    int8 = Int8Conv1d(conv)
    channels_first = torch.randn(2, 32, 101)
    channels_last = torch.randn(2, 101, 32).transpose(1, 2)  # what a layer-norm conv layer passes on
    single_window = torch.randn(1, 32, 3)  # the unfolded window is a view of this one
    with torch.inference_mode():
        for x in (channels_first, channels_last, single_window):
            before = x.clone()
            reference, out = conv(x), int8(x)
            assert out.shape == reference.shape
            cosine = torch.nn.functional.cosine_similarity(reference.flatten(), out.flatten(), dim=0)
            assert cosine > 0.995
            assert torch.equal(x, before)
        # Quiet frames keep their precision: each window has its own scale.
        unbiased = nn.Conv1d(32, 48, 3, 2, bias=False).eval()
        quiet = channels_first.clone()
        quiet[..., :51] *= 1e-3
        reference, out = unbiased(quiet)[..., :24], Int8Conv1d(unbiased)(quiet)[..., :24]
        assert torch.nn.functional.cosine_similarity(reference.flatten(), out.flatten(), dim=0) > 0.995


def test_cpu_preparation_keeps_fp32_outputs_and_gives_channels_last_waveform_features():
    torch.manual_seed(3)
    model = FeatureEncoder().eval()
    x = 0.1 * torch.randn(2, 1, 4000)
    with torch.inference_mode():
        reference, waveform_reference = model(x), model.waveform(x)
        prepare_for_cpu(model)
        torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-5)
        features = model.waveform(x)
    assert type(model.waveform) is WaveformConv1d and type(model.strided[0]) is nn.Conv1d  # fp32 kept
    assert not parametrize.is_parametrized(model.positional)
    torch.testing.assert_close(features, waveform_reference, rtol=1e-5, atol=1e-6)
    assert features.transpose(1, 2).is_contiguous()  # what the layer norm after it reads


def outlier_encoder(seed: int = 0) -> WhisperEncoder:
    """A tiny random Whisper encoder whose linear layers read a few outlier channels, as Whisper base's do."""
    torch.manual_seed(seed)
    config = EncoderConfig(d_model=64, layers=2, heads=4, ffn=256, mel_bins=80, max_positions=100)
    encoder = WhisperEncoder(config).eval().requires_grad_(False)
    with torch.no_grad():
        for layer in encoder.layers:
            layer.self_attn_layer_norm.weight[:3] *= 30  # into q/k/v
            layer.final_layer_norm.weight[3:6] *= 30  # into fc1
            layer.fc1.weight[:4] *= 40  # large GELU outputs: into fc2
    return encoder


def test_smoothing_leaves_a_float_whisper_encoder_unchanged():
    encoder = outlier_encoder()
    calibration = Int8Calibration(encoder.activation_peaks([voice_like(1.0, seed=s) for s in range(2)]), alpha=0.8)
    mel, lengths = encoder.features([voice_like(0.8, f0=200.0, seed=5), voice_like(1.5, seed=6)])
    with torch.inference_mode():
        reference = encoder(mel, lengths)
        encoder.smooth(calibration)
        smoothed = encoder(mel, lengths)
    assert all(type(layer.fc2) is SmoothedLinear for layer in encoder.layers)
    # The same arithmetic up to fp32 rounding: sums in another order differ by a few 1e-5 of the
    # peak (2.4e-5 on an AVX2-only CPU); a wrong scale moves them by its whole size.
    for a, b in zip(smoothed, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4 * float(b.abs().max()))


def test_smoothed_int8_is_closer_to_fp32_than_plain_int8(tmp_path):
    training, other = [voice_like(1.0, f0=120.0 + 40 * s, seed=s) for s in range(4)], [voice_like(1.2, seed=9)]
    Int8Calibration(outlier_encoder().activation_peaks(training), alpha=0.8).to_file(tmp_path / "peaks.safetensors")
    calibration = Int8Calibration.from_file(tmp_path / "peaks.safetensors")  # fp16 on disk
    assert calibration.alpha == 0.8 and set(calibration.peaks) >= {"layers.1.fc2", "layers.0.self_attn.q_proj"}
    with torch.inference_mode():
        reference = outlier_encoder().pooled(other)
        plain = quantize_int8(outlier_encoder()).pooled(other)
        smoothed = quantize_int8(outlier_encoder().smooth(calibration), per_channel=True)
        out = smoothed.pooled(other)
    assert not any(type(m) is nn.Linear for m in smoothed.modules())
    assert isinstance(smoothed.layers[1].fc2.linear, DynamicLinear)

    def error(x: torch.Tensor) -> float:
        return float((x - reference).norm() / reference.norm())

    assert error(out) < error(plain) / 2  # measured 0.010 against 0.028
