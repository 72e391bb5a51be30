"""Job tasks for the Celery tests: the workers import them through ``EMOTION_TEST_JOB_TASK``.

Each run appends ``start <pid>`` and ``end <pid>`` lines to ``$EMOTION_TEST_JOB_LOG`` so a test
can count how often a job was started and finished, across worker processes.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.audio.decode import AudioLimits
from emotion_service.jobs.task import run_job


def _log(event: str) -> None:
    path = os.environ.get("EMOTION_TEST_JOB_LOG")
    if path:
        with open(path, "a") as file:
            file.write(f"{event} {os.getpid()}\n")


@cache
def _analyzer() -> SpeechEmotionAnalyzer:
    from .conftest import StandInModel

    return SpeechEmotionAnalyzer.from_models({"standin": StandInModel()}, limits=AudioLimits(max_seconds=60))


def standin_interview(audio: bytes, options: dict[str, Any], progress) -> dict[str, Any]:
    """The real job (interview.run_job) with the tests' stand-in model."""
    _log("start")
    result = run_job(_analyzer(), audio, options, progress)
    _log("end")
    return result


def slow(audio: bytes, options: dict[str, Any], progress) -> dict[str, Any]:
    """About 3 s of 'work' with progress, long enough to kill the worker in the middle."""
    _log("start")
    for step in range(1, 16):
        time.sleep(0.2)
        progress(step / 16)
    _log("end")
    return {"bytes": len(audio)}
