"""int8 quantisation of the linear layers and feature convolutions: smaller, outputs close to fp32."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from emotion_service.models.optimize import Int8Conv1d, WaveformConv1d, fold_weight_norm, prepare_for_cpu, quantize_int8


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
