"""int8 quantisation of the linear layers: smaller, and outputs close to fp32."""

from __future__ import annotations

import io

import torch
from torch import nn

from emotion_service.models.optimize import quantize_int8


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
