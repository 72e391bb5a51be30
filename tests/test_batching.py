"""Micro-batching: concurrent requests share model calls and get the outputs they would alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.analysis.batching import BatchOptions, MicroBatcher
from emotion_service.errors import Overloaded
from emotion_service.models.base import EmotionModel, ModelInfo, ModelOutput

from .conftest import StandInModel
from .signals import voice_like


class SlowModel(StandInModel):
    """The stand-in, but each call takes a while and records its batch sizes."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__("slow")
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
        self.gate.wait(5)
        threading.Event().wait(self.delay)
        return super().process_signals(signals, sampling_rate, same_speaker=same_speaker)


def clips(n: int) -> list[np.ndarray]:
    return [voice_like(0.5 + 0.1 * (i % 7), f0=120 + 5 * i, seed=i) for i in range(n)]


def test_concurrent_requests_are_batched_and_get_their_own_outputs():
    model = SlowModel()
    batcher = MicroBatcher(model, BatchOptions(max_batch=8, max_wait=0.05))
    signals = clips(24)
    alone = [StandInModel()(s) for s in signals]
    with ThreadPoolExecutor(8) as pool:
        batched = list(pool.map(lambda s: batcher.process_signals([s])[0], signals))
    for a, b in zip(alone, batched, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-9)
    assert batcher.batches < len(signals)  # some calls were shared
    assert max(n for n, _ in model.calls) > 1
    assert all(n <= 8 for n, _ in model.calls)
    batcher.close()


def test_multi_clip_requests_keep_their_order():
    batcher = MicroBatcher(StandInModel(), BatchOptions(max_batch=4, max_wait=0.01))
    signals = clips(9)  # more than one batch, lengths out of order
    outputs = batcher.process_signals(signals)
    expected = StandInModel().process_signals(signals)
    assert [o.probabilities for o in outputs] == [pytest.approx(e.probabilities) for e in expected]
    batcher.close()


def test_errors_reach_every_caller_and_the_worker_survives():
    class Broken(EmotionModel):
        info = ModelInfo("broken", "Broken", "memory", "0", "MIT", ("happy",))
        fail = True

        def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
            if self.fail:
                raise RuntimeError("boom")
            return [ModelOutput({"happy": 1.0}) for _ in signals]

    model = Broken()
    batcher = MicroBatcher(model)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.process_signals(clips(2))
    model.fail = False
    assert batcher.process_signals(clips(1))[0].top_label == "happy"
    batcher.close()


def test_overload_is_refused_quickly():
    model = SlowModel()
    model.gate.clear()  # hold the worker so that work piles up
    batcher = MicroBatcher(model, BatchOptions(max_batch=2, max_wait=0.0, max_queue=4))
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(batcher.process_signals, clips(2)) for _ in range(3)]
        threading.Event().wait(0.2)
        with pytest.raises(Overloaded) as info:
            batcher.process_signals(clips(2))
        assert info.value.status == 503 and info.value.retry_after >= 1
        model.gate.set()
        assert all(len(f.result(timeout=10)) == 2 for f in waiting)
    batcher.close()


def test_analyzer_batches_single_clips_but_not_sessions():
    model = SlowModel()
    analyzer = SpeechEmotionAnalyzer.from_models({"slow": model}, batching=BatchOptions(max_batch=8, max_wait=0.05))
    signals = clips(8)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda s: analyzer.analyze(s, sampling_rate=16_000), signals))
    for signal, result in zip(signals, results, strict=True):
        assert result.models[0].output.probabilities == pytest.approx(StandInModel()(signal).probabilities)
    assert len(model.calls) < 8 and all(same is False for _, same in model.calls)
    model.calls.clear()
    analyzer.analyze_session(signals[:3], sampling_rate=16_000)
    assert model.calls == [(3, True)]
