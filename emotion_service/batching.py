"""Micro-batching: clips from concurrent requests go through a model together.

Each model gets one :class:`MicroBatcher`. Request threads hand it their clips and wait; a worker
thread takes what is queued (up to ``max_batch`` clips, waiting at most ``max_wait`` seconds for
more after the first), sorts the clips by length so that padding is small, runs the model once and
hands every request its own outputs.

Cores are shared by a plan made once per process (:func:`configure_torch_threads`, the
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
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ServiceError
from .models.base import SAMPLING_RATE, EmotionModel, ModelOutput, require_sampling_rate

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


@dataclass(frozen=True)
class ThreadPlan:
    """How a process shares its cores between model calls.

    Attributes:
        cores: Cores this process may use (its CPU affinity, divided among ``workers`` processes).
        torch_threads: torch intra-op threads of a call that runs alone.
        parallel_calls: Model calls that may run at once, all batchers together.
        busy_threads: Threads of each call when calls run side by side.
    """

    cores: int
    torch_threads: int
    parallel_calls: int
    busy_threads: int


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def plan_threads(
    torch_threads: int = 0, *, workers: int = 1, light_models: bool = False, cores: int | None = None
) -> ThreadPlan:
    """Share the cores between model calls (see the module docstring).

    Args:
        torch_threads: ``TORCH_THREADS``; 0 chooses: for the hub models all of the process's cores
            for a call alone and one each for calls side by side, for light models only one per call.
        workers: Server processes on the machine (``WORKERS``); each gets ``cores // workers``.
        light_models: Every model is small (the bundled CNN): calls run side by side instead.
        cores: Cores of the machine; default :func:`available_cores`.
    """
    share = max(1, (cores or available_cores()) // max(1, workers))
    if torch_threads:
        return ThreadPlan(share, torch_threads, max(1, share // torch_threads), torch_threads)
    return ThreadPlan(share, 1 if light_models else share, share, 1)


class CoreGate:
    """Lends the process's cores to model calls, all batchers together.

    A call waits until enough cores are free for it; it gets the plan's ``torch_threads`` when
    nothing else runs or waits, ``busy_threads`` otherwise. An exclusive call (a GPU model's: its
    batches are big and its activations in GPU memory) waits for every core and runs alone.
    """

    def __init__(self, plan: ThreadPlan) -> None:
        self.plan = plan
        self._free = plan.cores
        self._waiting = 0
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def call(self, *, exclusive: bool = False) -> Iterator[int]:
        """Hold cores for one model call; yields the torch threads it may use."""
        plan = self.plan
        with self._condition:
            self._waiting += 1
            while self._free < (plan.cores if exclusive else min(plan.busy_threads, plan.cores)):
                self._condition.wait()
            self._waiting -= 1
            alone = exclusive or (self._waiting == 0 and self._free == plan.cores)
            threads = plan.torch_threads if alone else plan.busy_threads
            held = min(threads, self._free)
            self._free -= held
        try:
            yield threads
        finally:
            with self._condition:
                self._free += held
                self._condition.notify_all()


_plan: ThreadPlan | None = None
_gate: CoreGate | None = None
_plan_lock = threading.Lock()


def configure_torch_threads(torch_threads: int = 0, *, workers: int = 1, light_models: bool = False) -> ThreadPlan:
    """Apply a :class:`ThreadPlan` to this process: torch's threads, and the batchers' shared gate.

    Call it once per server process before any model runs (later calls return the plan in force).
    It never touches CUDA.
    """
    global _plan, _gate
    with _plan_lock:
        if _plan is not None:
            return _plan
        plan = plan_threads(torch_threads, workers=workers, light_models=light_models)
        torch.set_num_threads(plan.torch_threads)
        try:
            # Requests already run in their own threads; torch's inter-op pool would add more.
            torch.set_num_interop_threads(1)
        except RuntimeError:  # set before, or inter-op work already started: keep what is there
            logger.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())
        _plan, _gate = plan, CoreGate(plan)
        logger.info(
            "torch threads: %d for a call alone, %d each for up to %d calls at once (%d cores)",
            plan.torch_threads,
            plan.busy_threads,
            plan.parallel_calls,
            plan.cores,
        )
        return plan


def current_plan() -> ThreadPlan | None:
    """The plan applied by :func:`configure_torch_threads`, or None when there is none."""
    return _plan


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
        with _plan_lock:
            plan, self._gate = _plan, _gate
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
