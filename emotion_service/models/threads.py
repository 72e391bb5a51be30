"""How a process shares its cores between model calls: the thread plan and the core gate.

Every kind of process that runs models (gunicorn workers, Celery workers, the command line) makes
one :class:`ThreadPlan` (:func:`configure_torch_threads`, or :func:`configure_threads` from the
service settings). Model calls borrow cores from the plan's :class:`CoreGate`, so that the
threads of the calls running at once never exceed the process's cores. See
:mod:`emotion_service.analysis.batching` for how the batchers use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..config import Settings, load_models_config

logger = logging.getLogger(__name__)


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


def current_gate() -> tuple[ThreadPlan | None, CoreGate | None]:
    """The plan in force and its gate, both None before :func:`configure_torch_threads` ran."""
    with _plan_lock:
        return _plan, _gate


def configure_threads(settings: Settings) -> ThreadPlan:
    """Share this process's cores between model calls as the settings say (``TORCH_THREADS``; once per process).

    The server entry points call it in each worker process before models load; apps built in tests
    leave the test process's threads alone. It never touches CUDA.
    """
    config = load_models_config(settings.models_config)
    # The bundled CNN is too small to split over cores: its calls run side by side instead.
    light = all(config.models[name].backend == "bundled" for name in config.preset(settings.model_preset))
    return configure_torch_threads(settings.torch_threads, workers=settings.workers, light_models=light)
