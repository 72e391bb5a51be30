"""TORCH_THREADS: how a server process shares its cores between model calls.

The plan is process-wide (torch's thread pools can be sized once), so where it is applied for
real the test runs in a subprocess and this test process keeps its own threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from emotion_service import batching
from emotion_service.batching import BatchOptions, MicroBatcher, ThreadPlan, plan_threads
from emotion_service.config import Settings
from emotion_service.errors import ConfigError

from .conftest import StandInModel

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "setting,workers,light,cores,expected",
    [
        (0, 1, False, 8, ThreadPlan(cores=8, torch_threads=8, parallel_calls=1)),  # hub models: calls take turns
        (0, 1, True, 8, ThreadPlan(cores=8, torch_threads=1, parallel_calls=8)),  # bundled: side by side
        (0, 4, False, 8, ThreadPlan(cores=2, torch_threads=2, parallel_calls=1)),  # WORKERS share the machine
        (0, 16, False, 8, ThreadPlan(cores=1, torch_threads=1, parallel_calls=1)),
        (2, 1, False, 8, ThreadPlan(cores=8, torch_threads=2, parallel_calls=4)),  # explicit TORCH_THREADS
        (3, 1, True, 2, ThreadPlan(cores=2, torch_threads=3, parallel_calls=1)),
    ],
)
def test_plan_divides_the_cores(setting, workers, light, cores, expected):
    assert plan_threads(setting, workers=workers, light_models=light, cores=cores) == expected


def test_setting_is_parsed_and_checked():
    assert Settings().torch_threads == 0
    assert Settings.from_env({"TORCH_THREADS": "3"}).torch_threads == 3
    with pytest.raises(ConfigError, match="TORCH_THREADS"):
        Settings.from_env({"TORCH_THREADS": "-1"})


APPLY = """
import json, torch
from emotion_service.api import configure_threads
from emotion_service.batching import available_cores
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
    assert (hub["threads"], hub["calls"], hub["interop"]) == (hub["cores"], 1, 1)
    bundled = applied(MODEL_PRESET="default")
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


@pytest.mark.parametrize("parallel_calls", [1, 2])
def test_batchers_share_the_plan(monkeypatch, parallel_calls):
    # The plan of a server process, set here by hand and undone afterwards.
    monkeypatch.setattr(batching, "_plan", ThreadPlan(2, 2 // parallel_calls, parallel_calls))
    monkeypatch.setattr(batching, "_gate", threading.BoundedSemaphore(parallel_calls))
    active, lock = [0], threading.Lock()
    models = [CountingModel(f"m{i}", active, lock) for i in range(3)]
    batchers = [MicroBatcher(m, BatchOptions(max_batch=4, max_wait=0.005)) for m in models]
    assert all(len(b._threads) == parallel_calls for b in batchers)
    signals = [np.sin(np.linspace(0, 200 * (i + 1), 8000)).astype(np.float32) for i in range(24)]

    def request(signal):  # each request goes through every model, as the analyzer does
        return [b.process_signals([signal])[0] for b in batchers]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(request, signals))
    for signal, outputs in zip(signals, results, strict=True):
        assert outputs[0].probabilities == pytest.approx(StandInModel()(signal).probabilities)
    assert max(m.most for m in models) == parallel_calls  # never more at once, and that many used
    for b in batchers:
        b.close()
