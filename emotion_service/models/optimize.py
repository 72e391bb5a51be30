"""Cheaper arithmetic for the hub models on CPU: int8 matrix multiplies, and less wasted work.

The transformer layers of the hub models spend most of their time in ``nn.Linear``; once those run
in int8, the convolutional feature encoder is the next big share (measured on a HuBERT-Large-shaped
model, 5 s clip, 2 cores: 0.61 s for the whole model with int8 linear layers, of which 0.24 s in
the feature encoder; 0.48 s once its convolutions are int8 too). Dynamic int8 quantisation stores
the weights as int8 and quantises activations on the fly (fbgemm on x86, which runs on AVX2). It
covers every ``nn.Linear`` and every plain ``nn.Conv1d`` except the first one, which reads the raw
waveform (8 bits per tensor would lose the quiet parts of a recording). The quality loss on real
speech is measured by the engine benchmark (``bench/bench_engine.py``).

Without int8 the arithmetic stays fp32 but wastes less (:func:`prepare_for_cpu`): weight
normalisation (the positional convolution's) is folded into a plain weight instead of being
recomputed on every call (:func:`fold_weight_norm`, on every device), and the waveform
convolution becomes a matrix multiply with channels-last output (:class:`WaveformConv1d`).

On CUDA the models run in fp16 instead (see the transformers backend); int8 is CPU only.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm

QUANTIZE_CHOICES = ("none", "int8", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that multiply bf16 natively


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX) and torch uses it.

    Elsewhere (AVX2-only, or AVX-512 without BF16) oneDNN emulates bf16, slower than fp32.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return bool(flags & set(BF16_FLAGS)) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fold_weight_norm(model: nn.Module) -> int:
    """Replace weight-normalised weights by the plain weight they compute, in place.

    Works for both forms torch has had (``nn.utils.parametrizations.weight_norm`` and the older
    ``nn.utils.weight_norm`` hook). Outputs are unchanged; the model can no longer be trained as
    weight-normalised. Returns the number of modules changed.
    """
    folded = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            folded += 1
        elif any(isinstance(hook, WeightNorm) for hook in module._forward_pre_hooks.values()):
            torch.nn.utils.remove_weight_norm(module)
            folded += 1
    return folded


def _plain_conv1d(module: nn.Module) -> bool:
    """A ``Conv1d`` without groups, dilation or padding: a matrix multiply over strided windows."""
    return (
        type(module) is nn.Conv1d
        and module.groups == 1
        and module.dilation == (1,)
        and module.padding in ((0,), "valid")
    )


class WaveformConv1d(nn.Module):
    """A ``Conv1d`` over one input channel (the raw waveform) as one matrix multiply of its windows.

    Same arithmetic in fp32, but the output comes out channels-last, which the layer norm that
    follows in wav2vec2/HuBERT wants (it otherwise copies the transposed output first), and
    oneDNN's convolution with one input channel was slow here: HuBERT-Large's first encoder layer
    went from 58-59 ms to 40-42 ms for 5 s on 1 and 2 cores, the whole int8 model 0.57 s to 0.51 s.
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.kernel = conv.kernel_size[0]
        self.stride = conv.stride[0]
        self.out_channels = conv.out_channels
        # (kernel, out): the windows (frames, kernel) multiply it directly.
        self.register_buffer("weight", conv.weight.detach().reshape(conv.out_channels, self.kernel).t().contiguous())
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias)

    @staticmethod
    def accepts(module: nn.Module) -> bool:
        return _plain_conv1d(module) and module.in_channels == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        windows = x[:, 0].unfold(1, self.kernel, self.stride)  # (batch, frames, kernel)
        out = torch.addmm(self.bias, windows.reshape(-1, self.kernel), self.weight)
        return out.view(batch, windows.shape[1], self.out_channels).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"1, {self.out_channels}, kernel_size={self.kernel}, stride={self.stride}"


def prepare_for_cpu(model: nn.Module) -> nn.Module:
    """Fold weight normalisation and compute waveform convolutions as matrix multiplies, in place.

    Outputs are unchanged up to float rounding. Returns ``model``.
    """
    fold_weight_norm(model)
    _replace(model, WaveformConv1d.accepts, WaveformConv1d)
    return model


def _replace(model: nn.Module, accepts: Callable[[nn.Module], bool], make: Callable[[Any], nn.Module]) -> None:
    for name, module in [(name, m) for name, m in model.named_modules() if accepts(m)]:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, make(module))


class Int8Conv1d(nn.Module):
    """A ``Conv1d`` (no groups, no padding) computed as an int8 matrix multiply over its input windows.

    Each window is divided by its own peak before the int8 kernel and the output multiplied back
    (exact in real arithmetic): the kernel quantises its input with one scale for the whole tensor,
    which on real recordings rounded the quiet frames of a clip away (HuBERT-Large-shaped model,
    logits cosine against fp32 on 12 RAVDESS clips: 0.971, lowest 0.885; 0.998, lowest 0.997,
    with the windows scaled). torch's own dynamically quantised ``Conv1d`` copies its input into a
    2-D layout twice per call and warns of poor accuracy (cosine 0.76 on random input). Measured
    speed of HuBERT-Large's feature encoder, 5 s, 2 cores: 0.24-0.30 s fp32, 0.13-0.16 s int8.
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.kernel = conv.kernel_size[0]
        self.stride = conv.stride[0]
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        linear = nn.Linear(conv.in_channels * self.kernel, conv.out_channels, bias=False)
        with torch.no_grad():
            # (out, in, kernel) flattened in that order matches the (in, kernel) order of unfold.
            linear.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
        linear.qconfig = torch.ao.quantization.default_dynamic_qconfig
        self.linear = DynamicLinear.from_float(linear)
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias)

    @staticmethod
    def accepts(module: nn.Module) -> bool:
        return _plain_conv1d(module) and module.in_channels > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, _ = x.shape
        frames = x.transpose(1, 2)  # (batch, time, channels): contiguous after a layer norm
        # Peak magnitude of each frame, (batch, time); linalg.vector_norm(ord=inf) measured 18x slower.
        peaks = torch.maximum(frames.amax(dim=2), frames.amin(dim=2).neg_())
        scale = peaks.unfold(1, self.kernel, self.stride).amax(dim=2).clamp_min(1e-12).unsqueeze(2)
        windows = frames.unfold(1, self.kernel, self.stride)  # (batch, windows, channels, kernel)
        flat = windows.reshape(batch, windows.shape[1], channels * self.kernel)
        # The reshape copies, except when the windows happen to be a view of x (one window the
        # length of a channels-first input): never scale the caller's tensor in place.
        flat = flat / scale if flat._is_view() else flat.div_(scale)
        return torch.addcmul(self.bias, self.linear(flat), scale).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel}, stride={self.stride}, int8"


def quantize_int8(model: nn.Module, keep_float: Sequence[str] = ()) -> nn.Module:
    """Run ``model``'s linear layers and its convolutions over features in int8 (CPU), in place.

    In place, so that loading never holds a second copy of the weights (measured on HuBERT-Large:
    peak 3.2 GB with a copy, 2.0 GB in place). After :func:`prepare_for_cpu`, every ``nn.Linear``
    becomes a dynamically quantised one, every plain ``nn.Conv1d`` over more than one channel an
    :class:`Int8Conv1d`; the waveform convolution and grouped ones (the positional convolution)
    stay fp32 (int8 there measured no faster). Linear layers whose name ends with one of
    ``keep_float`` stay fp32 too (Whisper's ``fc2``: its input, after the GELU, has outlier
    channels that 8 bits per tensor cannot hold). Returns ``model``.

    Raises:
        ValueError: The model is not on the CPU.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantisation is for CPU models; on CUDA use fp16 (QUANTIZE=none, DEVICE=cuda)")
    prepare_for_cpu(model)
    # Every tensor that stays float (biases, which the int8 kernels keep, norms, the first and the
    # grouped convolutions) gets its own memory: one left pointing into the checkpoint's memory map
    # keeps the whole file mapped, and the pages quantisation read stay resident (measured:
    # HuBERT-Large int8 kept 1.31 GB of file pages beside 0.71 GB of its own; 0.11 GB once owned).
    modules = dict(model.named_modules())
    linear = [name for name, m in modules.items() if type(m) is nn.Linear and not name.endswith(tuple(keep_float))]
    quantized = {id(modules[name].weight) for name in linear}
    quantized |= {id(m.weight) for m in modules.values() if Int8Conv1d.accepts(m)}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if id(tensor) not in quantized:
            tensor.data = tensor.data.clone()
    with _quiet_quantization():
        _replace(model, Int8Conv1d.accepts, Int8Conv1d)
        spec = set(linear) if keep_float else {nn.Linear}
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


@contextlib.contextmanager
def _quiet_quantization() -> Iterator[None]:
    with warnings.catch_warnings():
        # torch.ao.quantization's eager API is deprecated in favour of torchao, which is not
        # installed here; it is still present and measured faster in the pinned torch (2.13).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\.quantization")
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated", category=UserWarning)
        yield
