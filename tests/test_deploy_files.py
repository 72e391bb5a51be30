"""Docker cannot run here: the compose files are validated against the Compose specification's
schema, and the Dockerfile is parsed with Docker's own parser and checked for what deployment needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_files_follow_the_compose_spec():
    files = [str(ROOT / "docker-compose.yml"), str(ROOT / "docker-compose.gpu.yml")]
    check = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", *files],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_compose_wiring():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    api, nginx, redis = services["emotion-api"], services["nginx"], services["redis"]
    assert api["deploy"]["replicas"] >= 2
    env = api["environment"]
    assert env["HOST"] == "0.0.0.0" and "API_KEYS" in env  # exposed => keys required
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["TRUSTED_PROXIES"] == "1"  # exactly nginx in front
    assert any(v.endswith(":/app/models") for v in api["volumes"])
    # /jobs behind several replicas: one queue in Redis and a worker service, not per-replica SQLite.
    worker = services["job-worker"]
    assert env["JOB_BACKEND"] == "celery" and env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert worker["command"][:3] == ["celery", "-A", "emotion_service.celery_app"]
    assert worker["environment"] == env and worker["image"] == api["image"]
    assert "noeviction" in redis["command"] or "volatile-lru" in redis["command"]  # queued jobs never evicted
    assert "ports" not in api and "ports" not in redis  # only nginx is published
    conf = next(v for v in nginx["volumes"] if "emotion-api.conf" in v)
    assert (ROOT / conf.split(":")[0]).exists()
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["emotion-api"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"] and gpu["environment"]["DEVICE"] == "cuda"
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX"]


def test_dockerfile():
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    by = {}
    for c in commands:
        by.setdefault(c.cmd, []).append(c)
    assert by["FROM"][0].value[0].startswith("python:3.11")
    assert any(a.value[0].startswith("TORCH_INDEX=") for a in by["ARG"])  # CUDA build = one build argument
    assert by["USER"][-1].value[0] not in ("root", "0")
    assert by["CMD"][-1].value == ("python", "start_api_server.py")
    assert "HEALTHCHECK" in by
    for copy in by["COPY"]:
        for source in copy.value[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    requirements = (ROOT / "requirements.txt").read_text()
    torch_pin = next(line for line in requirements.splitlines() if line.startswith("torch=="))
    assert any(torch_pin in r.value[0] for r in by["RUN"]), (
        "the Dockerfile must install the same torch as requirements.txt"
    )
    # The service runs as a user who owns nothing in /app: whatever it writes (log file, job store,
    # models) must be in a directory created for it and given to it.
    env = dict(pair for e in by["ENV"] for pair in zip(e.value[::2], e.value[1::2], strict=True))
    writable = {env["MODELS_DIR"], str(Path(env["LOG_FILE"]).parent), env["JOB_DIR"]}
    chowned = " ".join(r.value[0] for r in by["RUN"] if "chown" in r.value[0])
    assert all("mkdir -p" in chowned and d in chowned for d in writable), (writable, chowned)
