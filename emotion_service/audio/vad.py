"""Silero VAD: speech probabilities every 32 ms from the model that ships inside the ``silero-vad`` wheel.

The model (MIT licence, about 2 MB, no download) is loaded once per process, lazily, on the CPU.
Its public streaming call (``model(chunk, 16000)`` per 512 samples) runs a Python loop over every
32 ms and keeps its LSTM state on the model object, so it is neither fast (about 60-80x real time
on one core) nor safe to share between threads. Only the LSTM carries state from one window to the
next: the STFT and the convolutional encoder see one window (plus 64 samples of context) at a time.
So the windows of a recording go through the encoder together, the LSTM runs over them as one
sequence (a batch of one), and the decoder maps its outputs to probabilities: the same numbers as
the streaming call (``tests/test_segmentation.py`` checks it against that call), over 1000x real
time on one core (``bench/bench_vad.py``), and memory bounded by blocks of 65 s.

Threads: the layers are small, and on two torch threads the model ran 5-100x slower, erratically
(OpenMP threads waiting on each other, worse when other work shares the cores). It runs on one
thread of its own, set to one torch thread once. ``torch.set_num_threads`` is per thread with
torch's OpenMP build, but it also sets the count that threads started later pick up, and importing
``silero_vad`` calls ``torch.set_num_threads(1)``: that count is put back at once, so the rest of
the process (e.g. the plan of ``TORCH_THREADS``) keeps its threads.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

RATE = 16_000
WINDOW = 512  # samples the model scores at a time at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees before each window
FRAME_SECONDS = WINDOW / RATE
THRESHOLD = 0.5  # silero's defaults: speech starts above THRESHOLD, ends below NEG_THRESHOLD
NEG_THRESHOLD = 0.35
_BLOCK = 2048  # windows (65 s) through the encoder at once: bounded memory on long recordings


class SileroVAD:
    """Per-window speech probabilities of a 16 kHz mono signal, computed in the calling thread.

    Args:
        jit_model: What ``silero_vad.load_silero_vad()`` returns (the TorchScript model).
    """

    def __init__(self, jit_model: Any) -> None:
        import torch

        try:
            inner = jit_model._model  # the 16 kHz network; the wrapper only adds the streaming state
            self._stft = inner.stft
            self._encoder = inner.encoder
            self._head = inner.decoder.decoder  # dropout (off in eval), ReLU, 1x1 conv, sigmoid
            cell = inner.decoder.rnn
        except AttributeError:
            raise ConfigError(
                f"VAD=silero: the model of silero-vad {version('silero-vad')} is laid out differently from "
                "6.2.3's; install the version in requirements.txt, or set VAD=energy."
            ) from None
        self._lstm = torch.nn.LSTM(cell.weight_ih.shape[1], cell.weight_hh.shape[1], batch_first=True)
        with torch.no_grad():
            self._lstm.weight_ih_l0.copy_(cell.weight_ih)
            self._lstm.weight_hh_l0.copy_(cell.weight_hh)
            self._lstm.bias_ih_l0.copy_(cell.bias_ih)
            self._lstm.bias_hh_l0.copy_(cell.bias_hh)
        self._lstm.eval()

    def probabilities(self, signal: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample window of ``signal`` (16 kHz); the last one zero-padded."""
        import torch

        count = -(-len(signal) // WINDOW)
        state: tuple[torch.Tensor, torch.Tensor] | None = None
        out = [torch.zeros(0)]
        with torch.inference_mode():
            for first in range(0, count, _BLOCK):
                n = min(_BLOCK, count - first)
                begin = first * WINDOW - CONTEXT  # negative for the first block: its context is silence
                block = np.zeros(CONTEXT + n * WINDOW, np.float32)  # zeros after the end, too
                part = signal[max(begin, 0) : first * WINDOW + n * WINDOW]
                block[max(-begin, 0) : max(-begin, 0) + len(part)] = part
                probabilities, state = self._step(torch.from_numpy(block), state)
                out.append(probabilities)
        return torch.cat(out).numpy()

    def _step(self, block: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        windows = block.unfold(0, WINDOW + CONTEXT, WINDOW)  # each with its context
        features = self._encoder(self._stft(windows)).squeeze(-1)
        hidden, state = self._lstm(features.unsqueeze(0), state)
        return self._head(hidden.squeeze(0).unsqueeze(-1)).reshape(-1), state

    def step(self, block: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """Probabilities of the next windows of a stream, and the state to pass with the block after.

        Args:
            block: ``CONTEXT`` samples that came before (zeros at the start), then whole windows.
            state: What the previous call returned (None at the start of a stream).
        """
        import torch

        with torch.inference_mode():
            probabilities, state = self._step(torch.from_numpy(block), state)
        return probabilities.numpy(), state


def _load_on_one_thread() -> SileroVAD:
    """Run in the model's own (new) thread: one torch thread for it, none changed elsewhere."""
    import torch

    process_threads = torch.get_num_threads()  # a new thread starts from the process's count
    torch.set_num_threads(1)  # this thread's, and (a side effect) that of threads started from now on
    try:
        try:
            from silero_vad import load_silero_vad  # sets torch.set_num_threads(1) too, when first imported
        except ImportError:
            raise ConfigError(
                "VAD=silero needs the silero-vad package: pip install -r requirements.txt, or set VAD=energy."
            ) from None
        with warnings.catch_warnings():
            # torch 2.9+ deprecates torch.jit.load, which is how the package ships its model.
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
            jit_model = load_silero_vad()
        return SileroVAD(jit_model.eval())
    finally:
        # Give threads started from now on the process's count again, from a throwaway thread, so
        # that neither this thread's nor any running thread's own count changes.
        setter = threading.Thread(target=torch.set_num_threads, args=(process_threads,))
        setter.start()
        setter.join()


class _Runner:
    """The model and the one thread that runs it."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silero-vad")
        try:
            self.model = self.executor.submit(_load_on_one_thread).result()
        except BaseException:
            self.executor.shutdown(wait=False)
            raise

    def probabilities(self, signal: np.ndarray) -> np.ndarray:
        return self.executor.submit(self.model.probabilities, signal).result()


_lock = threading.Lock()
_runner: _Runner | None = None


def _forget() -> None:
    # A forked child has no copy of the runner's thread: it loads its own on first use.
    global _lock, _runner
    _lock, _runner = threading.Lock(), None


os.register_at_fork(after_in_child=_forget)


def _the_runner() -> _Runner:
    global _runner
    with _lock:
        if _runner is None:
            _runner = _Runner()
        return _runner


def speech_probabilities(signal: np.ndarray) -> np.ndarray:
    """Speech probability of each 32 ms window of a 16 kHz mono signal (the model loads on first use)."""
    return _the_runner().probabilities(signal)


def stream_probabilities(block: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
    """:meth:`SileroVAD.step` on the model's thread: a live stream's next windows (see :mod:`.streaming`)."""
    runner = _the_runner()
    return runner.executor.submit(runner.model.step, block, state).result()


def speech_frames(
    probabilities: np.ndarray, threshold: float = THRESHOLD, neg_threshold: float = NEG_THRESHOLD
) -> np.ndarray:
    """Speech/silence per window with silero's hysteresis.

    A window is speech above ``threshold`` and silence below ``neg_threshold``; in between it
    keeps the state of the window before it (silence at the start).
    """
    decided = (probabilities >= threshold) | (probabilities < neg_threshold)
    last = np.maximum.accumulate(np.where(decided, np.arange(len(probabilities)), -1))
    state = probabilities >= threshold
    return np.where(last >= 0, state[np.maximum(last, 0)], False)
