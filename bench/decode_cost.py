"""Worst CPU cost of decoding an upload, per MB and against an ordinary recording, every format.

    python bench/decode_cost.py                 # files as long as the default limit (600 s)
    python bench/decode_cost.py --seconds 60

Decodes each upload of tests/expensive_audio.py (crafted to decode to as many samples per byte
as its format allows) with the service's decoder and default limits, and an ordinary 48 kHz
stereo recording of each format for reference. Prints, per upload, its size, the outcome, the
CPU seconds (least of --repeat runs), CPU seconds per MB and the ratio to the reference for the
same length; the last line is one JSON object with the worst of each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion_service.audio.decode import AudioLimits  # noqa: E402
from tests.expensive_audio import crafted, decode_cost, ordinary  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpuinfo import cpu_info, describe  # noqa: E402

FORMATS = ("wav", "flac", "mp3", "m4a", "ogg", "webm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="MAX_AUDIO_SECONDS (default: the service's)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per upload; the least CPU time counts")
    args = parser.parse_args()
    limits = AudioLimits(max_seconds=args.seconds)
    reference = {}
    for fmt in FORMATS:
        cost = decode_cost(ordinary(fmt, 30.0), limits, repeat=3)
        reference[fmt] = cost.cpu_seconds / 30.0
        print(f"reference {fmt}: {reference[fmt] * 1e3:.2f} ms of CPU per second of 48 kHz stereo")
    rows = []
    for case in crafted(args.seconds - 1):
        data = case.build(case.seconds)
        cost = decode_cost(data, limits, repeat=args.repeat)
        per_mb = cost.cpu_seconds / (len(data) / 1e6)
        times = cost.cpu_seconds / (reference[case.format] * case.seconds)
        rows.append({"case": case.name, "bytes": len(data), "outcome": cost.outcome,
                     "cpu_s": round(cost.cpu_seconds, 4), "cpu_s_per_mb": round(per_mb, 3),
                     "times_reference": round(times, 3)})  # fmt: skip
        print(f"{case.name:40s} {len(data) / 1e3:9.1f} kB  {cost.outcome:24s} {cost.cpu_seconds:7.3f} s  "
              f"{per_mb:6.2f} s/MB  {times:5.2f}x reference", flush=True)  # fmt: skip
    worst_mb = max(rows, key=lambda row: row["cpu_s_per_mb"])
    worst_ratio = max(rows, key=lambda row: row["times_reference"])
    worst_cpu = max(rows, key=lambda row: row["cpu_s"])
    # The bound held by tests/test_decode_cost.py: 2 s per MB, or else 3x the reference.
    held = all(row["cpu_s_per_mb"] <= 2.0 or row["times_reference"] <= 3.0 for row in rows)
    print(describe(), flush=True)
    print(json.dumps({"cpu": cpu_info(), "seconds": args.seconds, "cases": len(rows), "worst_cpu_s_per_mb": worst_mb,
                      "worst_times_reference": worst_ratio, "worst_cpu_s": worst_cpu,
                      "reference_ms_per_s": {k: round(v * 1e3, 3) for k, v in reference.items()},
                      "bound_held": held}))  # fmt: skip
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
