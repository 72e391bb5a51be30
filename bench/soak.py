"""Soak: N minutes at about half the measured capacity, through gunicorn, with the default model.

    python bench/soak.py                                  # 20 minutes, 2 of them warm-up
    python bench/soak.py --minutes 2 --warmup 0.5 --window 20     # a short check of the script

Starts ``gunicorn emotion_api:app`` on loopback (RATE_LIMITS=off: one client address), measures
its capacity with 8 clients for ``--measure`` seconds (or takes ``--rate``), then sends distinct
5 s clips at half that rate, open loop (a request is sent on schedule whatever the previous ones
do, at most 16 in flight). Every 5 s it samples the server's RSS, open file descriptors and
threads (master and workers). Prints latency p50/p99 per window and the samples; the last line
is one JSON object with pass/fail against: RSS growth after warm-up < 5%, no growth of
descriptors or threads after warm-up (the least seen in the first and the last minute, which
in-flight connections do not raise), p99 stable (the p99 of the second half after warm-up at
most twice the first half's) and no errors.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpuinfo import cpu_info, describe  # noqa: E402
from load_test import clip, rss_bytes, server  # noqa: E402

SAMPLE_SECONDS = 5.0
IN_FLIGHT = 16


def _pids(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(child) for child in children)]


def resources(pid: int) -> dict[str, float]:
    """RSS (MB), open descriptors and threads of the server: master and workers together."""
    fds = threads = 0
    for p in _pids(pid):
        try:
            fds += len(list(Path(f"/proc/{p}/fd").iterdir()))
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        threads += int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    return {"rss_mb": rss_bytes(pid) / 2**20, "fds": fds, "threads": threads}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Sender:
    """Distinct clips (the result cache would answer repeats), one session per thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clips = [clip(5.0, seed) for seed in range(16)]
        self.local = threading.local()
        self.count = 0
        self.lock = threading.Lock()

    def send(self) -> tuple[float, int]:
        with self.lock:
            self.count += 1
            number = self.count
        data = bytearray(self.clips[number % len(self.clips)])
        data[44:52] = number.to_bytes(8, "little")
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        started = time.perf_counter()
        try:
            response = session.post(self.url + "/analyze", json={"audio_data": base64.b64encode(data).decode()},
                                    timeout=60)  # fmt: skip
            status = response.status_code
        except requests.RequestException:
            status = 0
        return time.perf_counter() - started, status


def measure_capacity(sender: Sender, seconds: float, clients: int = 8) -> float:
    """Requests per second that ``clients`` closed-loop clients get."""
    stop = time.monotonic() + seconds
    done = []

    def client() -> None:
        while time.monotonic() < stop:
            latency, status = sender.send()
            if status == 200:
                done.append(latency)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(done) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before the baseline is taken")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per latency window")
    parser.add_argument("--rate", type=float, help="requests per second (default: half the measured capacity)")
    parser.add_argument("--measure", type=float, default=20.0, help="seconds of the capacity measurement")
    args = parser.parse_args()
    report: dict[str, object] = {"minutes": args.minutes, "warmup_minutes": args.warmup}
    with server({"RATE_LIMITS": "off", "LOG_FILE": "", "LOG_LEVEL": "WARNING"}) as (url, process):
        sender = Sender(url)
        capacity = None
        if args.rate is None:
            capacity = measure_capacity(sender, args.measure)
            rate = capacity / 2
        else:
            rate = args.rate
        report.update(capacity_rps=None if capacity is None else round(capacity, 2), rate_rps=round(rate, 2))
        print(f"capacity {capacity or float('nan'):.1f} requests/s; soaking at {rate:.1f} requests/s", flush=True)

        results: list[tuple[float, float, int]] = []  # (sent at, latency, status)
        samples: list[tuple[float, dict[str, float]]] = []
        start = time.monotonic()
        end = start + args.minutes * 60
        late = 0
        in_flight = threading.BoundedSemaphore(IN_FLIGHT)

        def one(sent_at: float) -> None:
            try:
                latency, status = sender.send()
                results.append((sent_at - start, latency, status))
            finally:
                in_flight.release()

        samples.append((0.0, resources(process.pid)))
        next_sample = start + SAMPLE_SECONDS
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            due = start
            while due < end:
                now = time.monotonic()
                if now >= next_sample:
                    samples.append((now - start, resources(process.pid)))
                    next_sample += SAMPLE_SECONDS
                if now < due:
                    time.sleep(min(due - now, 0.05))
                    continue
                if in_flight.acquire(blocking=False):
                    pool.submit(one, due)
                else:
                    late += 1  # the server is behind: this request is skipped, counted
                due += 1 / rate
        samples.append((time.monotonic() - start, resources(process.pid)))

    warm = args.warmup * 60
    windows = []
    for begin in range(int(warm), int(args.minutes * 60), int(args.window)):
        latencies = [lat for at, lat, status in results if begin <= at < begin + args.window and status == 200]
        if latencies:
            windows.append({"from_s": begin, "requests": len(latencies), "p50_ms": round(percentile(latencies, 0.5) * 1e3, 1),
                            "p99_ms": round(percentile(latencies, 0.99) * 1e3, 1)})  # fmt: skip
    for window in windows:
        print(f"{window['from_s']:5d} s: {window['requests']:5d} requests, p50 {window['p50_ms']:7.1f} ms, "
              f"p99 {window['p99_ms']:7.1f} ms")  # fmt: skip

    def median_of(key: str, begin: float, stop: float) -> float:
        values = [sample[key] for at, sample in samples if begin <= at <= stop]
        return statistics.median(values) if values else float("nan")

    def floor_of(key: str, begin: float, stop: float) -> float:
        # Descriptors and threads: the least seen, which in-flight connections do not raise but a leak does.
        values = [sample[key] for at, sample in samples if begin <= at <= stop]
        return min(values) if values else float("nan")

    total = args.minutes * 60
    baseline_end = warm + min(60.0, (total - warm) / 4)
    last_begin = total - min(60.0, (total - warm) / 4)
    rss = (median_of("rss_mb", warm, baseline_end), median_of("rss_mb", last_begin, total + 60))
    fds = (floor_of("fds", warm, baseline_end), floor_of("fds", last_begin, total + 60))
    threads = (floor_of("threads", warm, baseline_end), floor_of("threads", last_begin, total + 60))
    errors = sum(1 for _, _, status in results if status != 200)
    middle = warm + (total - warm) / 2
    halves = [[lat for at, lat, status in results if lo <= at < hi and status == 200]
              for lo, hi in ((warm, middle), (middle, total))]  # fmt: skip
    p99_halves = [round(percentile(half, 0.99) * 1e3, 1) for half in halves]
    checks = {
        "rss_growth_under_5_percent": (rss[1] - rss[0]) / rss[0] < 0.05,
        "no_descriptor_growth": fds[1] <= fds[0],
        "no_thread_growth": threads[1] <= threads[0],
        "p99_stable": p99_halves[1] <= 2 * p99_halves[0],
        "no_errors": errors == 0,
    }
    report.update(
        requests=len(results), errors=errors, skipped_late=late,
        rss_mb={"start": round(samples[0][1]["rss_mb"], 1), "after_warmup": round(rss[0], 1), "end": round(rss[1], 1),
                "growth_percent": round(100 * (rss[1] - rss[0]) / rss[0], 2)},
        fds={"start": samples[0][1]["fds"], "after_warmup": fds[0], "end": fds[1]},
        threads={"start": samples[0][1]["threads"], "after_warmup": threads[0], "end": threads[1]},
        p99_ms_first_and_second_half=p99_halves, windows=windows, checks=checks, passed=all(checks.values()),
    )  # fmt: skip
    print(describe(), flush=True)
    print(json.dumps({**report, "cpu": cpu_info()}))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
