"""Faults: what the service keeps and what it loses when a part of it fails.

Each test says in its docstring what is kept and what is lost. Real servers run on loopback:
``start_api_server.py`` (gunicorn) with the bundled model, a private redis-server, and a job store
on a filesystem that fills up.

A model that fails to load is covered elsewhere: with none loaded, /health is 503 ``unhealthy``
and /analyze 503 ``MODEL_UNAVAILABLE`` (test_api_http.py::test_no_models_means_503 in process,
test_server_e2e.py::test_test_api_fails_against_a_broken_server on a real server); with some
loaded, :func:`test_a_model_that_fails_to_load_degrades_the_service` below.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from emotion_service.analysis.cache import RedisCache
from emotion_service.jobs.store import JobStoreFull, SQLiteJobStore, new_job

from .server import free_port, redis_server, running
from .signals import wav

# Distinct clips (the result cache would answer repeats), 1 s each so that requests are quick.
CLIPS = [base64.b64encode(wav(1.0, f0=110 + 7 * i, seed=i)).decode() for i in range(24)]


@dataclass
class Outcome:
    client: int
    started: float
    ended: float
    status: int | str  # HTTP status, or the exception's name when no answer came


def _load(url: str, clients: int, stop: threading.Event, outcomes: list[Outcome], body=None) -> list[threading.Thread]:
    """``clients`` threads posting /analyze on keep-alive connections until ``stop`` is set."""
    numbers = itertools.count()
    lock = threading.Lock()

    def client(number: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                n = next(numbers)
                payload = body or {"audio_data": CLIPS[n % len(CLIPS)]}
                started = time.monotonic()
                try:
                    response = session.post(url + "/analyze", json=payload, timeout=30)
                    status: int | str = response.status_code
                    if status != 200:
                        status = f"{status} {response.json().get('error_code')}"
                except requests.RequestException as exc:
                    status = type(exc).__name__
                with lock:
                    outcomes.append(Outcome(number, started, time.monotonic(), status))

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


# -- a worker killed mid-request ------------------------------------------------------------------

CLIENTS = 6


def test_a_killed_worker_is_replaced_and_only_its_requests_fail():
    """SIGKILL one of two gunicorn workers while six clients keep posting /analyze.

    Kept: the master and its listening socket, the other worker and everything it was serving,
    every request sent after the kill (the other worker serves alone until the replacement has
    loaded the model). Lost: the requests in flight on the killed worker, one per client connected
    to it at most (the client sees the connection drop, no status: retrying /analyze is safe),
    and that worker's in-memory state: its rate-limit counts and result-cache entries.
    """
    env = {"WORKERS": "2", "THREADS": "2", "RATE_LIMITS": "off", "LOG_FILE": ""}
    with running(["start_api_server.py"], free_port(), env=env, ready=("healthy",)) as (url, master):
        workers = _wait_for(lambda: len(_children(master.pid)) == 2 and _children(master.pid), 60, "two workers")
        stop, outcomes = threading.Event(), []
        threads = _load(url, CLIENTS, stop, outcomes)
        _wait_for(lambda: len(outcomes) >= 20, 30, "load")
        victim = min(workers)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replacement = _wait_for(lambda: (_children(master.pid) - workers) or None, 60, "a replacement worker")
        served_at_kill = len(outcomes)
        _wait_for(lambda: len(outcomes) >= served_at_kill + 40, 60, "requests after the kill")
        stop.set()
        for thread in threads:
            thread.join(30)
        assert victim not in _children(master.pid) and len(_children(master.pid)) == 2
        assert requests.get(url + "/health", timeout=10).json()["data"]["status"] == "healthy"

    failed = [o for o in outcomes if o.status != 200]
    after = sum(o.started > killed_at for o in outcomes)
    print(f"{len(outcomes)} requests, {len(failed)} lost with the killed worker "
          f"({sorted({str(o.status) for o in failed})}), {after} sent after the kill")  # fmt: skip
    assert all(isinstance(o.status, str) and not o.status[0].isdigit() for o in failed), failed  # no 5xx answers
    assert len({o.client for o in failed}) == len(failed) <= CLIENTS, failed  # one lost request per client at most
    assert all(o.started <= killed_at + 0.5 for o in failed), (killed_at, failed)  # only what was in flight
    assert sum(o.status == 200 and o.started > killed_at for o in outcomes) >= 40
    assert replacement.isdisjoint(workers)


# -- Redis stopped, restarted and hung -----------------------------------------------------------


def _redis_keys(port: int) -> list[bytes]:
    import redis

    return redis.Redis(port=port, socket_timeout=2).keys("*")


def test_redis_stopped_restarted_and_hung_under_load(tmp_path):
    """REDIS_URL holds the rate-limit counts and the result cache; Redis stops, comes back empty,
    then hangs (SIGSTOP), while three clients keep posting /analyze.

    Kept: every request is answered 200 in every phase. The rate limits still hold, counted in
    each process's memory while Redis is away (so per worker, not across workers), and Redis is
    used again once it answers. Lost: the counts and cached results Redis held (a restarted Redis
    without persistence is empty: repeats are analysed again), and time: a hung Redis costs a
    request at most its 1 s socket timeout per failed call, after which the cache leaves Redis
    alone for 5 s (``emotion_cache_errors_total`` counts the failures).
    """
    port = free_port()
    log = tmp_path / "api.log"
    env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "RATE_LIMITS": "100000/minute", "LOG_FILE": str(log)}
    phases: dict[str, tuple[float, float]] = {}
    outcomes: list[Outcome] = []
    stop = threading.Event()
    # Each client repeats one clip: after the first request its answers come from the cache.
    bodies = [{"audio_data": clip} for clip in CLIPS[:3]]

    def phase(name: str, seconds: float) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        phases[name] = (started, time.monotonic())

    with redis_server(port, tmp_path) as first, running(["start_api_server.py"], free_port(), env=env) as (url, _):
        threads = [thread for body in bodies for thread in _load(url, 1, stop, outcomes, body=body)]
        phase("up", 2.0)
        first.terminate()
        first.wait(timeout=10)
        phase("stopped", 3.0)
        with redis_server(port, tmp_path) as second:
            phase("restarted", 3.0)
            keys = _wait_for(lambda: _redis_keys(port), 10, "keys in the restarted Redis")
            os.kill(second.pid, signal.SIGSTOP)
            phase("hung", 4.0)
            os.kill(second.pid, signal.SIGCONT)
            phase("resumed", 2.0)
            stop.set()
            for thread in threads:
                thread.join(30)
        metrics = requests.get(url + "/metrics", timeout=10).text

    for name, (start, end) in phases.items():
        during = [o for o in outcomes if start <= o.started < end]
        assert len(during) >= 3, (name, len(during))
        assert all(o.status == 200 for o in during), (name, [o.status for o in during if o.status != 200])
        slowest = max(o.ended - o.started for o in during)
        print(f"Redis {name}: {len(during)} requests, {sum(o.status == 200 for o in during)} answered 200, "
              f"slowest {slowest:.2f} s")  # fmt: skip
        # While Redis hangs or restarts a request may wait out several 1 s socket timeouts (in the
        # limiter and the cache) before the cache backs off: 3.03 s was seen once while restarting.
        assert slowest < (3.5 if name in ("hung", "restarted") else 1.5), (name, slowest)
    assert any(key.startswith(b"emotion:v1:") for key in keys), keys  # the cache writes to Redis again
    errors = [line for line in metrics.splitlines() if line.startswith("emotion_cache_errors_total")]
    assert errors and float(errors[0].split()[-1]) >= 2, errors  # stopped once, hung once
    records = [json.loads(line) for line in log.read_text().splitlines()]
    warnings = {r["message"][:60] for r in records if r["level"] == "WARNING"}
    assert any("falling back to in-memory" in w for w in warnings), warnings
    assert any("result cache unavailable" in w for w in warnings), warnings


def test_the_result_cache_leaves_a_failed_redis_alone_for_a_while(caplog, monkeypatch):
    """Redis unreachable: a lookup is a miss, and for ``pause_seconds`` no call goes to Redis at all."""
    from prometheus_client import REGISTRY

    from emotion_service.http.metrics import record_cache_error

    # nothing listens there; the server gives the cache its metrics hook the same way
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", pause_seconds=0.5, on_error=record_cache_error)
    calls = []
    real_get = cache._client.get
    monkeypatch.setattr(cache._client, "get", lambda key: calls.append(key) or real_get(key))
    before = REGISTRY.get_sample_value("emotion_cache_errors_total") or 0.0
    with caplog.at_level("WARNING", logger="emotion_service.analysis.cache"):
        assert [cache.get("k"), cache.get("k"), cache.get("k")] == [None, None, None]
        cache.set("k", {"a": 1})
    assert len(calls) == 1 and len(caplog.records) == 1 and "treating as a miss" in caplog.text
    assert REGISTRY.get_sample_value("emotion_cache_errors_total") == before + 1
    time.sleep(0.6)
    assert cache.get("k") is None and len(calls) == 2  # tried again after the pause


# -- a model that fails to load -------------------------------------------------------------------


def test_a_model_that_fails_to_load_degrades_the_service():
    """The ``all`` preset offline: the three hub models cannot load, the shipped ones do.

    Kept: /analyze with the models that loaded. Lost: the failed models' votes; /health says
    ``degraded`` (HTTP 200) and why each failed.
    """
    with running(["start_api_server.py"], free_port(), env={"MODEL_PRESET": "all", "LOG_FILE": ""}) as (url, _):
        health = requests.get(url + "/health", timeout=10)
        assert health.status_code == 200
        data = health.json()["data"]
        assert data["status"] == "degraded" and data["available_models"] == ["encoder_default", "bundled"]
        assert {f["name"] for f in data["failed_models"]} == {"exhubert", "hubert_large", "wav2vec2_xlsr"}
        assert all(f["reason"] for f in data["failed_models"])
        analysed = requests.post(url + "/analyze", json={"audio_data": CLIPS[0]}, timeout=30).json()
        models = [m["model"] for m in analysed["data"]["models_results"]]
        assert analysed["success"] and models == ["encoder_default", "bundled"]


# -- a full disk under the job store --------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(directory: Path, size: int, allow_mount: bool = True) -> Iterator[tuple[str, list[str]]]:
    """A directory where at most ``size`` bytes fit; yields how, and the server command to use.

    A tmpfs of that size where mounting is allowed (root with CAP_SYS_ADMIN); elsewhere the
    server runs with RLIMIT_FSIZE at ``size`` (writing a larger file fails with EFBIG, as a
    quota would), so the behaviour is tested on every machine.
    """
    directory.mkdir()
    mounted = allow_mount and os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)], capture_output=True
    ).returncode == 0  # fmt: skip
    if mounted:
        try:
            yield "tmpfs", ["start_api_server.py"]
        finally:
            subprocess.run(["umount", "-l", str(directory)], check=True)
        return
    limited = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size}, {size})); "
        "sys.argv = ['start_api_server.py']; runpy.run_path('start_api_server.py', run_name='__main__')"
    )
    yield "RLIMIT_FSIZE", ["-c", limited]


def check_full_disk(tmp_path: Path, allow_mount: bool = True) -> str:
    """Fill the job store's disk under a running server; return which kind of small disk was used."""
    size = 4_000_000
    small, large = wav(2.0), wav(150.0)  # 64 kB fits; 4.8 MB does not
    directory = tmp_path / "jobs"
    env = {"JOB_DIR": str(directory), "RATE_LIMITS": "off", "LOG_FILE": ""}
    with (
        small_filesystem(directory, size, allow_mount) as (how, command),
        running(command, free_port(), env=env, ready=("healthy",)) as (url, _),
    ):

        def submit(audio: bytes) -> requests.Response:
            return requests.post(url + "/jobs", files={"audio": ("a.wav", audio)}, timeout=30)

        accepted = submit(small)
        assert accepted.status_code == 202, (how, accepted.text)
        first = accepted.json()["data"]["job_id"]
        _wait_for(lambda: requests.get(f"{url}/jobs/{first}", timeout=10).json()["data"]["status"] == "done", 60,
                  "the first job")  # fmt: skip

        refused = submit(large)
        assert refused.status_code == 507, (how, refused.status_code, refused.text[:300])
        body = refused.json()
        assert body["success"] is False and body["error_code"] == "JOB_STORE_FULL" and "retry later" in body["message"]
        assert str(directory) not in body["message"]  # no server paths in answers
        assert not list((directory / "audio").iterdir())  # no partial recording left filling the disk

        kept = requests.get(f"{url}/jobs/{first}", timeout=10).json()["data"]
        assert kept["status"] == "done" and kept["result"], how
        assert requests.get(url + "/health", timeout=10).json()["data"]["status"] == "healthy"
        again = submit(small)  # room for a small recording: the store was not left broken
        assert again.status_code == 202, (how, again.text)
    return how


def test_a_full_disk_refuses_new_jobs_and_keeps_the_old_ones(tmp_path):
    """The job store's filesystem has no room for a new recording.

    Kept: the service, every stored job and its result (reads need no space), and the store
    itself (a small job is accepted again once it fits). Lost: only the refused submission,
    answered 507 JOB_STORE_FULL with "retry later"; nothing of it stays on disk. (A job that
    finishes while the disk is full cannot save its result; it stays ``running`` until the
    service restarts and runs it again.)
    """
    assert check_full_disk(tmp_path) in ("tmpfs", "RLIMIT_FSIZE")


def test_sqlite_full_refuses_the_job_and_leaves_the_store_usable(tmp_path):
    """SQLITE_FULL (the database cannot grow): the new job is refused with JobStoreFull, its
    recording is deleted, earlier jobs are kept, and the store works again once there is room.
    """
    store = SQLiteJobStore(tmp_path)
    kept = new_job({"speech_lang": "en"})
    store.create(kept, b"first")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # no page more: the database is "full"
    refused = new_job({"note": "x" * 50_000})  # needs overflow pages
    with pytest.raises(JobStoreFull) as info:
        store.create(refused, b"second")
    assert info.value.status == 507 and info.value.error_code == "JOB_STORE_FULL"
    assert store.get(refused.id) is None and store.audio(refused.id) is None
    assert store.get(kept.id) is not None and store.audio(kept.id) == b"first"
    store._db.execute(f"PRAGMA max_page_count = {pages + 1000}")
    store.create(refused, b"second")  # no transaction was left open
    assert store.get(refused.id) is not None
    store.close()
