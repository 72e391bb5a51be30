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

Whisper's encoder (the encoder presets) is smoothed before int8 (SmoothQuant: :func:`smoothing_scale`,
:class:`SmoothedLinear`, used by ``WhisperEncoder.smooth``): its activations have outlier channels
and frames that one 8-bit scale per tensor cannot hold.

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


# Flags of CPUs whose int8 dot products accumulate in 32 bits (VNNI): 8-bit activations cannot
# saturate there, where AVX2's 16-bit pair sums can (fbgemm then uses 7 bits, ``reduce_range``).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's flags in ``cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX) and torch uses it.

    Elsewhere (AVX2-only, or AVX-512 without BF16) oneDNN emulates bf16, slower than fp32.
    """
    return bool(cpu_flags(cpuinfo) & set(BF16_FLAGS)) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU's int8 dot products accumulate in 32 bits (AVX-512 VNNI, AVX-VNNI, AMX)."""
    return bool(cpu_flags(cpuinfo) & set(VNNI_FLAGS))


class FullRangeDynamicLinear(DynamicLinear):
    """torch's dynamically quantised ``Linear`` with 8-bit activations instead of 7.

    fbgemm quantises activations to 7 bits (``reduce_range``) because AVX2's int8 multiply sums
    pairs of products in 16 bits, which 8-bit inputs can overflow. With VNNI the sums are 32-bit
    and the 8th bit is free accuracy: smoothed Whisper base, logits' cosine to fp32 on training
    speakers' clips 0.99904 with 7 bits, 0.99943 with 8 (lowest 0.9914 → 0.9982).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)


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


def peak_magnitude(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """The largest ``|x|`` along ``dim``; measured 2x faster than ``abs()`` then ``amax`` and 18x
    faster than ``linalg.vector_norm(ord=inf)``: two reductions, no copy of ``x``."""
    return torch.maximum(x.amax(dim=dim, keepdim=keepdim), x.amin(dim=dim, keepdim=keepdim).neg_())


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
        peaks = peak_magnitude(frames, dim=2)  # of each frame, (batch, time)
        scale = peaks.unfold(1, self.kernel, self.stride).amax(dim=2).clamp_min(1e-12).unsqueeze(2)
        windows = frames.unfold(1, self.kernel, self.stride)  # (batch, windows, channels, kernel)
        flat = windows.reshape(batch, windows.shape[1], channels * self.kernel)
        # The reshape copies, except when the windows happen to be a view of x (one window the
        # length of a channels-first input): never scale the caller's tensor in place.
        flat = flat / scale if flat._is_view() else flat.div_(scale)
        return torch.addcmul(self.bias, self.linear(flat), scale).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel}, stride={self.stride}, int8"


def smoothing_scale(peak: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel scale ``s`` of linear layers that read one input.

    ``s_j = peak_j ** alpha / max|W[:, j]| ** (1 - alpha)`` over every weight in ``weights``:
    the layers then multiply ``W * s`` by ``x / s``, whose outlier channels ``s`` shrinks, moving
    part of their range into the weights, which are quantised per output channel.

    Args:
        peak: The input's largest magnitude per channel, measured on real data (:func:`activation_peaks`).
        weights: The ``(out, in)`` weights of the layers that read the input.
        alpha: How much of the range moves into the weights (0: none, 1: all).
    """
    column = torch.stack([w.detach().abs().amax(dim=0) for w in weights]).amax(dim=0)
    return (peak.float().clamp_min(1e-5) ** alpha / column.clamp_min(1e-5) ** (1 - alpha)).clamp_min(1e-5)


@torch.no_grad()
def smooth_after_norm(norm: nn.LayerNorm, linears: Sequence[nn.Linear], scale: torch.Tensor) -> None:
    """Fold ``1 / scale`` into the layer norm that feeds ``linears`` and ``scale`` into their
    weights' columns, in place: the same outputs, at no cost per call."""
    norm.weight.div_(scale)
    norm.bias.div_(scale)
    for linear in linears:
        linear.weight.mul_(scale)


@torch.no_grad()
def smooth_through(producer: nn.Linear, consumer: nn.Linear, scale: torch.Tensor) -> None:
    """Fold ``1 / scale`` into the output rows of ``producer`` and ``scale`` into the columns of
    ``consumer``, in place; exact when what lies between them mixes rows but not channels (an
    attention's values and its output projection)."""
    producer.weight.div_(scale[:, None])
    if producer.bias is not None:
        producer.bias.div_(scale)
    consumer.weight.mul_(scale)


class SmoothedLinear(nn.Module):
    """A linear layer that scales its input per channel and per row before multiplying.

    For an input whose scale cannot be folded into a previous layer (after a GELU): the weight's
    columns are multiplied by ``scale`` and the input divided by it (SmoothQuant), and each row
    (frame) is divided by its own peak, the output multiplied back, as :class:`Int8Conv1d` does
    (the int8 kernel quantises its input with one scale for the whole tensor, and Whisper's frames
    differ in range by far more than 8 bits hold; Whisper base smoothed, logits' cosine to fp32 on
    training speakers' clips: 0.9965 without the frames' scaling, 0.9993 with). Exact in real
    arithmetic; the inner
    ``nn.Linear`` (no bias) is what :func:`quantize_int8` makes int8. Measured at the shape of
    Whisper base's ``fc2`` (250 frames of 2048 → 512, 1 core): 1.31 ms int8, 1.52 ms with the
    scaling, 5.4 ms fp32.
    """

    def __init__(self, linear: nn.Linear, scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(linear.in_features, linear.out_features, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight * scale)
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("bias", bias)
        self.register_buffer("inverse", 1.0 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.inverse
        peaks = peak_magnitude(x, dim=-1, keepdim=True).clamp_min_(1e-12)  # of each row
        return torch.addcmul(self.bias, self.linear(x.div_(peaks)), peaks)


@torch.no_grad()
def activation_peaks(model: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """The largest magnitude of each input channel of every ``nn.Linear`` while ``run()`` runs ``model``.

    Returns:
        Per linear layer's name, a ``(in_features,)`` float32 tensor.
    """
    peaks: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float().flatten(0, -2)
            peak = peak_magnitude(x, dim=0)
            peaks[name] = torch.maximum(peaks[name], peak) if name in peaks else peak

        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if type(m) is nn.Linear]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def quantize_int8(model: nn.Module, per_channel: bool = False, full_range: bool = False) -> nn.Module:
    """Run ``model``'s linear layers and its convolutions over features in int8 (CPU), in place.

    In place, so that loading never holds a second copy of the weights (measured on HuBERT-Large:
    peak 3.2 GB with a copy, 2.0 GB in place). After :func:`prepare_for_cpu`, every ``nn.Linear``
    becomes a dynamically quantised one, every plain ``nn.Conv1d`` over more than one channel an
    :class:`Int8Conv1d`; the waveform convolution and grouped ones (the positional convolution)
    stay fp32 (int8 there measured no faster). The weights get one scale per tensor, or one per
    output channel with ``per_channel`` (for layers smoothed first, whose rows then differ in
    range: smoothed Whisper base's logits' cosine to fp32, training speakers' clips, 0.9993
    instead of 0.9986, measured no slower). ``full_range``: 8-bit activations
    (:class:`FullRangeDynamicLinear`; only where :func:`native_vnni`). Returns ``model``.

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
    modules = model.modules()
    quantized = {id(m.weight) for m in modules if type(m) is nn.Linear or Int8Conv1d.accepts(m)}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if id(tensor) not in quantized:
            tensor.data = tensor.data.clone()
    with _quiet_quantization():
        _replace(model, Int8Conv1d.accepts, Int8Conv1d)
        spec = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
        mapping = {nn.Linear: FullRangeDynamicLinear} if full_range else None
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, mapping=mapping, inplace=True)


@contextlib.contextmanager
def _quiet_quantization() -> Iterator[None]:
    with warnings.catch_warnings():
        # torch.ao.quantization's eager API is deprecated in favour of torchao, which is not
        # installed here; it is still present and measured faster in the pinned torch (2.13).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\.quantization")
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated", category=UserWarning)
        yield
