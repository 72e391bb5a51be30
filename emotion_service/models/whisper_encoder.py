"""Whisper's audio encoder, frozen, run on a clip's real length: log-mel in, pooled layer statistics out.

The weights are OpenAI Whisper ``base``'s encoder (MIT; shipped in
``emotion_service/resources/whisper-base-encoder`` with its LICENSE and provenance). The modules
are the ones of ``transformers``' ``WhisperEncoder`` (same state-dict keys, same arithmetic: the
tests compare the two on a full 30 s input), written out here so that a clip runs on its own
length instead of being padded to 30 s (10× less work for a 3 s answer), a batch of clips of
different lengths runs with an attention mask, and the linear layers can be quantised to int8
(smoothed first, :meth:`WhisperEncoder.smooth`, with the activation peaks of
:data:`CALIBRATION_FILE` beside the weights).

What comes out of :meth:`WhisperEncoder.pooled` is, for each of the encoder's hidden states (the
input to the first layer and the output of every layer), the mean and standard deviation over
the clip's real frames: ``(clips, states, 2 * d_model)``. The emotion heads (:mod:`.encoder`)
are trained on exactly that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import SAMPLING_RATE
from .optimize import SmoothedLinear, activation_peaks, smooth_after_norm, smooth_through, smoothing_scale

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms: 100 mel frames per second, 50 encoder frames per second
MAX_SECONDS = 30.0  # the encoder's positions stop at 1500 frames
CALIBRATION_FILE = "int8-calibration.safetensors"  # beside the weights: what smoothing for int8 needs
# The linear layers whose input peaks smoothing reads, per encoder layer (k_proj and v_proj read
# q_proj's input).
SMOOTHED_INPUTS = ("self_attn.q_proj", "self_attn.out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class EncoderConfig:
    """The shape of a Whisper encoder (``config.json`` of the weights' folder)."""

    d_model: int = 512
    layers: int = 6
    heads: int = 8
    ffn: int = 2048
    mel_bins: int = 80
    max_positions: int = 1500

    @classmethod
    def from_file(cls, path: str | Path) -> EncoderConfig:
        raw = json.loads(Path(path).read_text("utf-8"))
        return cls(
            d_model=raw["d_model"],
            layers=raw["encoder_layers"],
            heads=raw["encoder_attention_heads"],
            ffn=raw["encoder_ffn_dim"],
            mel_bins=raw["num_mel_bins"],
            max_positions=raw["max_source_positions"],
        )


@dataclass(frozen=True)
class Int8Calibration:
    """What smoothing an encoder for int8 needs: the largest magnitude of each input channel of
    its linear layers (:data:`SMOOTHED_INPUTS`) on real speech, and SmoothQuant's ``alpha``."""

    peaks: dict[str, torch.Tensor]
    alpha: float

    @classmethod
    def from_file(cls, path: str | Path) -> Int8Calibration:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            peaks = {name: handle.get_tensor(name).float() for name in handle.keys()}  # noqa: SIM118
        if "alpha" not in metadata:
            raise ValueError(f"{path} has no alpha in its metadata: write it with Int8Calibration.to_file")
        return cls(peaks, float(metadata["alpha"]))

    def to_file(self, path: str | Path, **provenance: str) -> None:
        """Save as safetensors (fp16 peaks), ``alpha`` and ``provenance`` in the metadata."""
        from safetensors.torch import save_file

        tensors = {name: peak.half().contiguous() for name, peak in sorted(self.peaks.items())}
        save_file(tensors, str(path), metadata={"alpha": repr(self.alpha), **provenance})


def mel_filters(mel_bins: int = 80) -> torch.Tensor:
    """Whisper's mel filterbank (Slaney scale and area norm, as librosa and transformers build it).

    Written out here so that serving never imports librosa (and numba with it: ~100 MB per worker).

    Returns:
        ``(N_FFT // 2 + 1, mel_bins)`` float32.
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, log_step = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(
            hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / log_step, hz / f_sp
        )

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(log_step * (mel - min_log_mel)), f_sp * mel)

    frequencies = np.linspace(0, SAMPLING_RATE / 2, N_FFT // 2 + 1)
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(SAMPLING_RATE / 2)), mel_bins + 2))
    ramps = edges[:, None] - frequencies[None, :]
    widths = np.diff(edges)
    lower, upper = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights.T.astype(np.float32))


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram of one clip at its own length: ``(mel_bins, samples // HOP)``.

    The same steps as ``WhisperFeatureExtractor``: power STFT (Hann 25 ms, hop 10 ms, centred),
    mel filterbank, log10, floor at the clip's maximum minus 8, then ``(x + 4) / 4``.
    """

    def __init__(self, mel_bins: int = 80) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", mel_filters(mel_bins), persistent=False)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(signal, N_FFT, HOP, window=self.window, return_complex=True)
        power = spectrum[..., :-1].abs() ** 2
        mel = self.filters.T @ power
        log = torch.clamp(mel, min=1e-10).log10()
        log = torch.maximum(log, log.max() - 8.0)
        return (log + 4.0) / 4.0


class _Attention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, frames, self.heads, width // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, width))


class _Layer(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.self_attn = _Attention(config.d_model, config.heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.ffn)
        self.fc2: nn.Linear | SmoothedLinear = nn.Linear(config.ffn, config.d_model)  # smoothed: WhisperEncoder.smooth
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    """Whisper's encoder, run on real lengths. ``state_dict`` keys are those of ``transformers``'.

    Args:
        config: The encoder's shape.
        depth: Run only the first ``depth`` layers (the heads may not need the last ones);
            default all.
    """

    def __init__(self, config: EncoderConfig, depth: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.depth = config.layers if depth is None else depth
        self.mel = LogMel(config.mel_bins)
        self.conv1 = nn.Conv1d(config.mel_bins, config.d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(config.d_model, config.d_model, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_positions, config.d_model)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.layers))
        self.layer_norm = nn.LayerNorm(config.d_model)

    @property
    def max_seconds(self) -> float:
        """Longest clip the positions cover (30 s for Whisper): longer ones go through in windows."""
        return self.config.max_positions * 2 * HOP / SAMPLING_RATE

    @property
    def states(self) -> int:
        """Hidden states :meth:`pooled` returns per clip: the input of layer 1, then each layer's output."""
        return self.depth + 1

    @classmethod
    def load(cls, directory: str | Path, depth: int | None = None) -> WhisperEncoder:
        """Load ``config.json`` and ``model.safetensors`` (fp16 or fp32) from ``directory``, as fp32."""
        from safetensors.torch import load_file

        directory = Path(directory)
        encoder = cls(EncoderConfig.from_file(directory / "config.json"), depth)
        state = {name: tensor.float() for name, tensor in load_file(str(directory / "model.safetensors")).items()}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        missing = [name for name in missing if not name.startswith("mel.")]
        if missing or unexpected:
            raise ValueError(
                f"{directory} is not a Whisper encoder: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                "point to a folder with the config.json and model.safetensors of a WhisperEncoder."
            )
        if encoder.depth < encoder.config.layers:
            del encoder.layers[encoder.depth :]
        return encoder.eval().requires_grad_(False)

    def activation_peaks(self, signals: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """The largest magnitude of each input channel of the layers :meth:`smooth` reads, over
        ``signals`` (each run alone, so that no padding frame counts)."""
        peaks = activation_peaks(self, lambda: [self.pooled([signal]) for signal in signals])
        return {name: peak for name, peak in peaks.items() if name.endswith(SMOOTHED_INPUTS)}

    def smooth(self, calibration: Int8Calibration) -> WhisperEncoder:
        """Move the outlier channels of the linear layers' inputs into their weights, in place (SmoothQuant).

        The same outputs in fp32, but inputs that 8 bits per tensor hold: the scale of the
        attention's and the FFN's input folds into the layer norm before them, that of the output
        projection into the values' rows; ``fc2``, after the GELU, becomes a
        :class:`~.optimize.SmoothedLinear`, which also scales each frame by its own peak. Then
        quantise with ``quantize_int8(encoder, per_channel=True)``. Returns ``self``.

        Raises:
            ValueError: ``calibration`` lacks one of this encoder's layers, or the encoder is smoothed.
        """
        alpha, peaks = calibration.alpha, calibration.peaks
        for index, layer in enumerate(self.layers):
            names = [f"layers.{index}.{name}" for name in SMOOTHED_INPUTS]
            if missing := [name for name in names if name not in peaks]:
                raise ValueError(f"the int8 calibration has no {missing[0]}: make it with this encoder")
            if not isinstance(layer.fc2, nn.Linear):
                raise ValueError("this encoder is smoothed already: load it again to smooth it otherwise")
            attention = layer.self_attn
            qkv = [attention.q_proj, attention.k_proj, attention.v_proj]
            readers = [qkv, [attention.out_proj], [layer.fc1], [layer.fc2]]
            qkv_scale, out_scale, fc1_scale, fc2_scale = (
                smoothing_scale(peaks[name], [linear.weight for linear in linears], alpha)
                for name, linears in zip(names, readers, strict=True)
            )
            smooth_after_norm(layer.self_attn_layer_norm, qkv, qkv_scale)
            smooth_through(attention.v_proj, attention.out_proj, out_scale)
            smooth_after_norm(layer.final_layer_norm, [layer.fc1], fc1_scale)
            layer.fc2 = SmoothedLinear(layer.fc2, fc2_scale)
        return self

    def features(self, signals: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel of each clip, zero-padded to the longest: ``(clips, mel_bins, frames)`` and the lengths."""
        mels = [self.mel(torch.as_tensor(s, dtype=torch.float32, device=self.conv1.weight.device)) for s in signals]
        lengths = torch.tensor([m.shape[-1] for m in mels])
        if int(lengths.max()) > 2 * self.config.max_positions:
            raise ValueError(
                f"a clip is longer than the encoder's {self.max_seconds:g} s: cut it in windows first (windows())"
            )
        longest = int(lengths.max())
        batch = torch.zeros(len(mels), self.config.mel_bins, longest, device=mels[0].device)
        for i, mel in enumerate(mels):
            batch[i, :, : mel.shape[-1]] = mel
        return batch, lengths

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states ``[(clips, frames, d_model)] * states`` and nothing past each clip's frames.

        Args:
            mel: ``(clips, mel_bins, mel_frames)``, zero past each clip's length.
            lengths: Mel frames of each clip (at most ``2 * max_positions``).
        """
        dtype = self.conv1.weight.dtype
        mel = mel.to(dtype)
        x = F.gelu(self.conv1(mel))
        steps = torch.arange(x.shape[-1], device=x.device)
        # Zero past each clip's end, as the convolution's own padding is for a clip alone.
        x = x * (steps[None, :] < lengths.to(x.device)[:, None]).to(dtype)[:, None, :]
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        frames = x.shape[1]
        x = x + self.embed_positions.weight[:frames].to(dtype)
        valid = torch.arange(frames, device=x.device)[None, :] < encoder_frames(lengths).to(x.device)[:, None]
        mask = None
        if not bool(valid.all()):
            mask = torch.zeros(valid.shape, dtype=dtype, device=x.device)
            mask = mask.masked_fill(~valid, torch.finfo(dtype).min)[:, None, None, :]
        states = [x]
        for index, layer in enumerate(self.layers[: self.depth]):
            x = layer(x, mask)
            last = index == self.config.layers - 1
            states.append(self.layer_norm(x) if last else x)
        return states

    def pooled(self, signals: Sequence[np.ndarray]) -> torch.Tensor:
        """Mean and standard deviation of every hidden state over each clip's real frames.

        Returns:
            ``(clips, states, 2 * d_model)`` float32.
        """
        mel, lengths = self.features(signals)
        states = self(mel, lengths)
        frames = encoder_frames(lengths).to(mel.device)
        valid = (torch.arange(states[0].shape[1], device=mel.device)[None, :] < frames[:, None]).float()[..., None]
        count = frames.float()[:, None].clamp(min=1)
        pooled = []
        for state in states:
            state = state.float()
            mean = (state * valid).sum(1) / count
            var = (((state - mean[:, None]) ** 2) * valid).sum(1) / count
            pooled.append(torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1))
        return torch.stack(pooled, dim=1)


def encoder_frames(mel_lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames of clips of ``mel_lengths`` mel frames (the second convolution halves them)."""
    return (mel_lengths + 1) // 2


def windows(samples: int, seconds: float = MAX_SECONDS, overlap: float = 0.25) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges that cover a clip in windows of at most ``seconds``.

    Windows overlap by at least ``overlap`` of their length and are spread evenly.
    """
    size = int(seconds * SAMPLING_RATE)
    if samples <= size:
        return [(0, samples)]
    step = size * (1 - overlap)
    count = math.ceil((samples - size) / step) + 1
    starts = np.linspace(0, samples - size, count).round().astype(int)
    return [(int(s), int(s) + size) for s in starts]
