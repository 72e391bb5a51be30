"""Micro-batching: clips from concurrent requests go through a model together.

Each model gets one :class:`MicroBatcher`. Request threads hand it their clips and wait; a worker
thread takes what is queued (up to ``max_batch`` clips, waiting at most ``max_wait`` seconds for
more after the first), sorts the clips by length so that padding is small, runs the model once and
hands every request its own outputs.

Cores are shared by a plan made once per process (:func:`~emotion_service.models.threads.configure_torch_threads`, the
``TORCH_THREADS`` setting) and lent to model calls by one :class:`CoreGate` for all the batchers
of the process, so that the threads of the calls running at once never exceed the process's cores.
The hub models are big enough to use every core in one call: a call that runs alone gets them all
(lowest latency), while calls that find others waiting run side by side on one core each (no
threads waiting for each other inside a call: at 8 clients on 2 cores the full preset went from
1.97 to 2.43 audio seconds per second, int8). The bundled CNN is too small to split (a 5 s clip is
~0.4 GFLOP), so its calls always run one thread each, as many at once as there are cores: on 2
cores that took it from 469 to 749 audio seconds per second at 8 clients (``bench/bench_engine.py``).
An explicit ``TORCH_THREADS=n`` gives every call n threads.

When more than ``max_queue`` clips are waiting, new work is refused at once with
:class:`Overloaded` (HTTP 503 with ``Retry-After``) instead of piling up.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

from ..config import SAMPLING_RATE
from ..errors import Overloaded
from ..models.base import EmotionModel, ModelOutput, require_sampling_rate
from ..models.threads import current_gate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """How requests are grouped.

    Attributes:
        max_batch: Most clips per model call.
        max_wait: Longest wait (s) for more clips after the first one arrives.
        max_queue: Most clips waiting; beyond it requests are refused with 503.
    """

    max_batch: int = 8
    max_wait: float = 0.005
    max_queue: int = 256


@dataclass
class _Job:
    signals: list[np.ndarray]
    future: Future[list[ModelOutput]]


class MicroBatcher:
    """Runs one model on batches gathered from concurrent callers.

    The batcher has as many worker threads as the process's thread plan lets model calls run at
    once (one for a model on a GPU, whose calls run alone), and every call of every batcher holds cores of the plan's :class:`CoreGate`, with as many
    torch threads as it lends. Without a plan (:func:`configure_torch_threads` not called) it has
    one thread, no gate, and torch's threads as they are.

    Args:
        model: The model; only the batcher's threads call it from now on.
        options: Batch size, wait and queue bounds.
    """

    def __init__(self, model: EmotionModel, options: BatchOptions | None = None) -> None:
        self.model = model
        self.options = options or BatchOptions()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._queued = 0
        self._lock = threading.Lock()
        self.batches = 0  # batches run, for tests and metrics
        plan, self._gate = current_gate()
        # A GPU model's calls take turns with all others: side by side they would only split its
        # batches and multiply the activations in GPU memory.
        self._exclusive = model.info.device.startswith("cuda")
        self._threads = [
            threading.Thread(target=self._run, name=f"batch-{model.info.name}-{n}", daemon=True)
            for n in range(plan.parallel_calls if plan and not self._exclusive else 1)
        ]
        for thread in self._threads:
            thread.start()

    def process_signals(self, signals: Sequence[np.ndarray], sampling_rate: int = SAMPLING_RATE) -> list[ModelOutput]:
        """Score clips as the model would, batched with other callers' clips; blocks until done.

        Raises:
            Overloaded: Too much work is queued.
        """
        require_sampling_rate(sampling_rate, self.model.info.display_name)
        with self._lock:
            if self._queued + len(signals) > self.options.max_queue:
                raise Overloaded(
                    f"The service is busy ({self._queued} clips waiting for {self.model.info.display_name}); "
                    "retry in a second, or send fewer segments per request.",
                )
            self._queued += len(signals)
        job = _Job(list(signals), Future())
        self._jobs.put(job)
        return job.future.result()

    def close(self) -> None:
        """Stop the worker threads once the queued work is done."""
        self._jobs.put(None)  # each worker puts it back for the next one
        for thread in self._threads:
            thread.join(timeout=30)

    def _gather(self, first: _Job) -> list[_Job]:
        limit = self.options.max_batch
        if len(self._threads) > 1:
            # Several workers: take a fair share of what waits, so that the others get work at once
            # instead of the whole queue going through one call while they idle.
            with self._lock:
                waiting = self._queued
            limit = min(limit, max(1, -(-waiting // len(self._threads))))
        jobs, count = [first], len(first.signals)
        deadline = time.monotonic() + self.options.max_wait
        while count < limit:
            remaining = deadline - time.monotonic()
            try:
                job = self._jobs.get(timeout=max(remaining, 0)) if remaining > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # let the loop see the stop signal after this batch
                break
            jobs.append(job)
            count += len(job.signals)
        return jobs

    def _cores(self) -> AbstractContextManager[int | None]:
        return self._gate.call(exclusive=self._exclusive) if self._gate is not None else contextlib.nullcontext()

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                self._jobs.put(None)  # for the batcher's other workers
                return
            jobs = self._gather(first)
            signals = [s for job in jobs for s in job.signals]
            with self._lock:
                self._queued -= len(signals)
            order = sorted(range(len(signals)), key=lambda i: len(signals[i]))
            try:
                outputs_sorted: list[ModelOutput] = []
                for start in range(0, len(order), self.options.max_batch):
                    chunk = order[start : start + self.options.max_batch]
                    with self._cores() as threads:
                        if threads and threads != torch.get_num_threads():
                            torch.set_num_threads(threads)  # this thread's own setting
                        outputs_sorted += self.model.process_signals([signals[i] for i in chunk], SAMPLING_RATE)
            except Exception as exc:  # noqa: BLE001 - not swallowed: every waiting caller re-raises it
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            with self._lock:
                self.batches += 1
            outputs: list[ModelOutput | None] = [None] * len(signals)
            for position, index in enumerate(order):
                outputs[index] = outputs_sorted[position]
            offset = 0
            for job in jobs:
                job.future.set_result([o for o in outputs[offset : offset + len(job.signals)] if o is not None])
                offset += len(job.signals)
