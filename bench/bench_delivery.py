"""Speed of the model-free delivery metrics and of segmentation on this CPU, in × real time.

A generated recording (speech-like bursts at 140 Hz with pauses, 16 kHz; by default 10 minutes)
goes through ``prosody.measure`` (the delivery metrics of a whole session) and through
``segmentation.find_speech`` with each VAD. Best of ``--repeats`` runs each.

    python bench/bench_delivery.py [--minutes 10] [--repeats 3]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emotion_service.audio.prosody import measure  # noqa: E402
from emotion_service.audio.segmentation import VADS, SegmentOptions, find_speech  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpuinfo import cpu_info, describe  # noqa: E402

RATE = 16_000


def recording(minutes: float, seed: int = 0) -> np.ndarray:
    """Bursts of 2.5 s (harmonics of a gliding 140 Hz pitch, syllable-rate envelope) between 0.4–3 s pauses."""
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < minutes * 60 * RATE:
        t = np.arange(int(2.5 * RATE)) / RATE
        phase = 2 * np.pi * np.cumsum(140 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t))) / RATE
        burst = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 * (1 - np.cos(2 * np.pi * 4 * t))) ** 1.5
        pause = 1e-3 * rng.standard_normal(int(rng.uniform(0.4, 3.0) * RATE))
        parts += [0.25 * burst, pause]
        total += len(burst) + len(pause)
    return np.concatenate(parts).astype(np.float32)


def best_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    signal = recording(args.minutes)
    seconds = len(signal) / RATE
    find_speech(signal[: 5 * RATE], RATE, SegmentOptions(vad="silero"))  # load the VAD network once
    timings = {"delivery_metrics": best_seconds(lambda: measure(signal, RATE), args.repeats)}
    for vad in VADS:
        options = SegmentOptions(vad=vad)
        timings[f"segmentation_{vad}"] = best_seconds(lambda o=options: find_speech(signal, RATE, o), args.repeats)

    print(describe())
    print(f"{seconds / 60:.1f} min of generated speech at 16 kHz, best of {args.repeats}")
    for name, elapsed in timings.items():
        print(f"  {name:<22} {elapsed:7.2f} s  -> {seconds / elapsed:7.0f}x faster than real time")
    print(
        json.dumps(
            {
                "cpu": cpu_info(),
                "audio_seconds": seconds,
                **{f"{k}_x_real_time": round(seconds / v, 1) for k, v in timings.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
