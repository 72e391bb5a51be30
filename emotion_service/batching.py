"""Micro-batching: clips from concurrent requests go through a model together.

Each model gets one :class:`MicroBatcher` with one worker thread. Request threads hand it their
clips and wait; the worker takes what is queued (up to ``max_batch`` clips, waiting at most
``max_wait`` seconds for more after the first), sorts the clips by length so that padding is
small, runs the model once and hands every request its own outputs. One thread per model also
means one batch at a time per model, so concurrent requests do not oversubscribe the cores.

When more than ``max_queue`` clips are waiting, new work is refused at once with
:class:`Overloaded` (HTTP 503 with ``Retry-After``) instead of piling up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .errors import ServiceError
from .models.base import SAMPLING_RATE, EmotionModel, ModelOutput

logger = logging.getLogger(__name__)


class Overloaded(ServiceError):
    """More work is queued than the service can start soon; retry after ``retry_after`` seconds."""

    status = 503
    error_code = "OVERLOADED"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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

    Args:
        model: The model; only the batcher's thread calls it from now on.
        options: Batch size, wait and queue bounds.
    """

    def __init__(self, model: EmotionModel, options: BatchOptions | None = None) -> None:
        self.model = model
        self.options = options or BatchOptions()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._queued = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"batch-{model.info.name}", daemon=True)
        self._thread.start()
        self.batches = 0  # batches run, for tests and metrics

    def process_signals(self, signals: Sequence[np.ndarray], sampling_rate: int = SAMPLING_RATE) -> list[ModelOutput]:
        """Score clips as the model would, batched with other callers' clips; blocks until done.

        Raises:
            Overloaded: Too much work is queued.
        """
        if sampling_rate != SAMPLING_RATE:
            raise ValueError(f"sampling_rate must be {SAMPLING_RATE}, got {sampling_rate}")
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
        """Stop the worker thread once the queued work is done."""
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, count = [first], len(first.signals)
        deadline = time.monotonic() + self.options.max_wait
        while count < self.options.max_batch:
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

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
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
                    outputs_sorted += self.model.process_signals([signals[i] for i in chunk], SAMPLING_RATE)
            except Exception as exc:  # noqa: BLE001 - not swallowed: every waiting caller re-raises it
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            self.batches += 1
            outputs: list[ModelOutput | None] = [None] * len(signals)
            for position, index in enumerate(order):
                outputs[index] = outputs_sorted[position]
            offset = 0
            for job in jobs:
                job.future.set_result([o for o in outputs[offset : offset + len(job.signals)] if o is not None])
                offset += len(job.signals)
