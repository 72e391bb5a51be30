"""The CI subset of bench/hostile_run.py (the full run is 10,000+ cases, see the README)."""

from __future__ import annotations

import json
import subprocess
import sys

from .server import ROOT


def test_a_small_hostile_run_finds_no_5xx_crash_or_hang():
    done = subprocess.run(
        [sys.executable, "bench/hostile_run.py", "--scale", "0.02"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(done.stdout.splitlines()[-2])
    assert summary["problems"] == [], summary["problems"]
    assert done.returncode == 0
    assert summary["total_cases"] >= 200
    parts = summary["parts"]
    assert len(parts["api"]["operations"]) == 8 and parts["api"]["cases"] >= 15  # every operation but the WebSocket
    assert parts["decoder"]["cases"] == 100 and parts["http"]["cases"] == 50 and parts["stream"]["cases"] == 8
    assert summary["slowest"]["seconds"] < 10
