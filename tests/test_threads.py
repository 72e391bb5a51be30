"""TORCH_THREADS: how a server process shares its cores between model calls.

The plan is process-wide (torch's thread pools can be sized once), so where it is applied for
real the test runs in a subprocess and this test process keeps its own threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from emotion_service.analysis.batching import BatchOptions, MicroBatcher
from emotion_service.config import Settings
from emotion_service.errors import ConfigError
from emotion_service.models import threads
from emotion_service.models.threads import CoreGate, ThreadPlan, plan_threads

from .conftest import StandInModel

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "setting,workers,light,cores,expected",
    [
        # hub models: a call alone gets every core, calls side by side one each
        (0, 1, False, 8, ThreadPlan(cores=8, torch_threads=8, parallel_calls=8, busy_threads=1)),
        (0, 1, True, 8, ThreadPlan(cores=8, torch_threads=1, parallel_calls=8, busy_threads=1)),  # bundled
        (0, 4, False, 8, ThreadPlan(cores=2, torch_threads=2, parallel_calls=2, busy_threads=1)),  # WORKERS
        (0, 16, False, 8, ThreadPlan(cores=1, torch_threads=1, parallel_calls=1, busy_threads=1)),
        (2, 1, False, 8, ThreadPlan(cores=8, torch_threads=2, parallel_calls=4, busy_threads=2)),  # TORCH_THREADS
        (3, 1, True, 2, ThreadPlan(cores=2, torch_threads=3, parallel_calls=1, busy_threads=3)),
    ],
)
def test_plan_divides_the_cores(setting, workers, light, cores, expected):
    assert plan_threads(setting, workers=workers, light_models=light, cores=cores) == expected


def test_gate_gives_a_lone_call_every_core_and_waiting_calls_one_each():
    gate = CoreGate(plan_threads(0, cores=4))
    with gate.call() as threads:
        assert threads == 4  # alone: lowest latency
    started, release, granted = threading.Barrier(3), threading.Event(), []
    lock = threading.Lock()

    def call():
        with gate.call() as threads:
            with lock:
                granted.append(threads)
            started.wait(timeout=5)  # two calls hold cores at the same time
            release.wait(timeout=5)

    with gate.call() as first:
        assert first == 4
        # These wait for the cores the lone call holds, then run side by side with one each.
        workers = [threading.Thread(target=call) for _ in range(2)]
        for worker in workers:
            worker.start()
        while gate._waiting < 2:
            threading.Event().wait(0.001)
    started.wait(timeout=5)
    assert granted == [1, 1]
    release.set()
    for worker in workers:
        worker.join(timeout=5)
    assert gate._free == 4


def test_gate_never_lends_more_cores_than_the_process_has():
    gate = CoreGate(plan_threads(3, cores=2))  # TORCH_THREADS above the cores: one call at a time
    with gate.call() as threads:
        assert threads == 3 and gate._free == 0
    assert gate._free == 2


def test_setting_is_parsed_and_checked():
    assert Settings().torch_threads == 0
    assert Settings.from_env({"TORCH_THREADS": "3"}).torch_threads == 3
    with pytest.raises(ConfigError, match="TORCH_THREADS"):
        Settings.from_env({"TORCH_THREADS": "-1"})


APPLY = """
import json, torch
from emotion_service.models.threads import configure_threads
from emotion_service.models.threads import available_cores
from emotion_service.config import Settings
plan = configure_threads(Settings.from_env())
again = configure_threads(Settings.from_env({"TORCH_THREADS": "5"}))  # once per process
print(json.dumps({
    "threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
    "calls": plan.parallel_calls, "cores": available_cores(), "same": again == plan,
    "cuda_initialised": torch.cuda.is_initialized(),
}))
"""


def applied(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("TORCH_THREADS", "WORKERS", "MODEL_PRESET")}
    done = subprocess.run(
        [sys.executable, "-c", APPLY],
        env={**environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_torch_threads_setting_is_applied_in_the_server_process():
    out = applied(TORCH_THREADS="1", MODEL_PRESET="full")
    assert (out["threads"], out["interop"], out["same"], out["cuda_initialised"]) == (1, 1, True, False)
    assert out["calls"] == out["cores"]


def test_automatic_threads_follow_the_preset():
    hub = applied(MODEL_PRESET="full")
    assert (hub["threads"], hub["calls"], hub["interop"]) == (hub["cores"], hub["cores"], 1)
    encoder = applied(MODEL_PRESET="default")  # the Whisper encoder: a call alone gets every core, as the hub models
    assert (encoder["threads"], encoder["calls"]) == (encoder["cores"], encoder["cores"])
    bundled = applied(MODEL_PRESET="fast")
    assert (bundled["threads"], bundled["calls"]) == (1, bundled["cores"])


class CountingModel(StandInModel):
    """Records how many calls of any model sharing ``active`` run at the same moment."""

    def __init__(self, name: str, active: list[int], lock: threading.Lock) -> None:
        super().__init__(name)
        self.active, self.lock, self.most = active, lock, 0

    def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
        with self.lock:
            self.active[0] += 1
            self.most = max(self.most, self.active[0])
        threading.Event().wait(0.02)
        with self.lock:
            self.active[0] -= 1
        return super().process_signals(signals, sampling_rate, same_speaker=same_speaker)


@pytest.mark.parametrize("torch_threads", [2, 1, 0])
def test_batchers_share_the_plan(monkeypatch, torch_threads):
    # The plan of a server process (2 cores, TORCH_THREADS=2, 1 or automatic), set by hand and undone afterwards.
    plan = plan_threads(torch_threads, cores=2)
    monkeypatch.setattr(threads, "_plan", plan)
    monkeypatch.setattr(threads, "_gate", CoreGate(plan))
    active, lock = [0], threading.Lock()
    models = [CountingModel(f"m{i}", active, lock) for i in range(3)]
    batchers = [MicroBatcher(m, BatchOptions(max_batch=4, max_wait=0.005)) for m in models]
    assert all(len(b._threads) == plan.parallel_calls for b in batchers)
    signals = [np.sin(np.linspace(0, 200 * (i + 1), 8000)).astype(np.float32) for i in range(24)]

    def request(signal):  # each request goes through every model, as the analyzer does
        return [b.process_signals([signal])[0] for b in batchers]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(request, signals))
    for signal, outputs in zip(signals, results, strict=True):
        assert outputs[0].probabilities == pytest.approx(StandInModel()(signal).probabilities)
    assert max(m.most for m in models) == plan.parallel_calls  # never more at once, and that many used
    for b in batchers:
        b.close()


class ThreadsModel(StandInModel):
    """Records torch's intra-op threads in the thread that runs each call."""

    def __init__(self) -> None:
        super().__init__("threads")
        self.seen: list[int] = []

    def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
        import torch

        self.seen.append(torch.get_num_threads())
        threading.Event().wait(0.01)
        return super().process_signals(signals, sampling_rate, same_speaker=same_speaker)


def test_each_call_runs_with_the_threads_the_gate_lends(monkeypatch):
    import torch

    before = torch.get_num_threads()
    plan = plan_threads(0, cores=2)  # a lone call 2 threads, calls side by side 1 each
    monkeypatch.setattr(threads, "_plan", plan)
    monkeypatch.setattr(threads, "_gate", CoreGate(plan))
    model = ThreadsModel()
    batcher = MicroBatcher(model, BatchOptions(max_batch=1, max_wait=0))
    signal = np.zeros(1600, dtype=np.float32)
    batcher.process_signals([signal])
    assert model.seen == [2]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: batcher.process_signals([signal]), range(16)))
    batcher.close()
    assert 1 in model.seen[1:]  # under load, calls ran side by side on one thread each
    assert torch.get_num_threads() == before  # the workers' settings are their own


def test_gpu_model_calls_run_alone(monkeypatch):
    plan = plan_threads(0, cores=2)
    monkeypatch.setattr(threads, "_plan", plan)
    monkeypatch.setattr(threads, "_gate", CoreGate(plan))
    active, lock = [0], threading.Lock()
    spans: list[tuple[str, float, float]] = []

    class Timed(CountingModel):
        def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
            start = time.perf_counter()
            outputs = super().process_signals(signals, sampling_rate, same_speaker=same_speaker)
            spans.append((self.info.name, start, time.perf_counter()))
            return outputs

    gpu = Timed("gpu", active, lock)
    gpu.info = dataclasses.replace(gpu.info, device="cuda:0")
    cpu = [Timed(f"cpu{i}", active, lock) for i in range(2)]
    batchers = [MicroBatcher(m, BatchOptions(max_batch=4, max_wait=0.005)) for m in (gpu, *cpu)]
    assert [len(b._threads) for b in batchers] == [1, 2, 2]
    signals = [np.sin(np.linspace(0, 100 * (i + 1), 4000)).astype(np.float32) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: [b.process_signals([s]) for b in batchers], signals))
    for b in batchers:
        b.close()
    gpu_calls = [(start, end) for name, start, end in spans if name == "gpu"]
    others = [(start, end) for name, start, end in spans if name != "gpu"]
    assert gpu_calls and others
    # Nothing else ran while a GPU call did; CPU calls still ran side by side.
    assert not any(s < e2 and s2 < e for s, e in gpu_calls for s2, e2 in others)
    assert max(m.most for m in cpu) == 2
