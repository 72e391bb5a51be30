"""Both VADs on real speech in noise: RAVDESS held-out actors 21-24, as ``bench/bench_vad.py`` builds it.

Four sessions (one per actor) of six clips joined with known pauses, seed 0: the ``--quick`` subset
of the benchmark. The corpus comes from ``RAVDESS_DIR`` (default ``../shared/data/ravdess``); the
test skips, saying so, where it is absent.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from emotion_service.audio.segmentation import SegmentOptions

REPO = Path(__file__).resolve().parent.parent
# A few points under what `python bench/bench_vad.py` reports at 20 dB (README, "Segmentation"), so
# that harmless numeric drift passes and a broken VAD, threshold or framing fails.
F1_FLOOR_20DB = {
    "energy": {"white@20": 0.87, "pink@20": 0.76, "brown@20": 0.82, "hum@20": 0.83},
    "silero": {"white@20": 0.91, "pink@20": 0.91, "brown@20": 0.92, "hum@20": 0.91},
}
COUNT_ERROR_CEILING_20DB = 0.05  # the default VAD: segments found vs reference (bench: 1-3%)
SILERO_F1_FLOOR_5DB = 0.80  # why silero is the default: it still works where energy calls it all speech


def corpus_dir() -> Path:
    return Path(os.environ.get("RAVDESS_DIR", REPO.parent / "shared" / "data" / "ravdess"))


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_vad", REPO / "bench" / "bench_vad.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_vad"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, dict[str, float]]]:
    root = corpus_dir()
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"RAVDESS not found at {root}: set RAVDESS_DIR to the folder holding manifest.csv")
    bench = load_bench()
    started = time.perf_counter()
    sessions = bench.build_sessions(root, sessions=4, clips=6, seed=0)
    assert {s.actor for s in sessions} == set(bench.HELD_OUT)
    assert sum(len(s.reference) for s in sessions) >= 20
    results = bench.evaluate(sessions, [*F1_FLOOR_20DB["silero"], "pink@5"], seed=0)
    assert time.perf_counter() - started < 60
    return results


@pytest.mark.parametrize("vad", ["energy", "silero"])
def test_frame_f1_at_20_db(scores, vad):
    for condition, floor in F1_FLOOR_20DB[vad].items():
        assert scores[vad][condition]["f1"] >= floor, (condition, scores[vad][condition])


def test_default_vad_counts_segments_and_outdoes_energy(scores):
    default = SegmentOptions().vad
    assert default == "silero"
    for condition in F1_FLOOR_20DB[default]:
        assert scores[default][condition]["count_error"] <= COUNT_ERROR_CEILING_20DB, (condition, scores[default])
        assert scores[default][condition]["f1"] > scores["energy"][condition]["f1"], condition
    assert scores[default]["pink@5"]["f1"] >= SILERO_F1_FLOOR_5DB
    assert scores["energy"]["pink@5"]["f1"] < 0.75  # everything becomes "speech" at 5 dB
