"""Prometheus metrics of the service, and their rendering for ``GET /metrics``.

Under gunicorn with several workers, prometheus_client runs in multiprocess mode: each worker
writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker adds them
up. The server sets that directory before the workers start (see :mod:`emotion_service.http.server`);
it must be set before prometheus_client is first imported. Without it (tests, ``flask run``)
the metrics live in this process only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from ..analysis.analyzer import AnalysisResult

# Decided when prometheus_client is imported, so read once, here, as well.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

REQUESTS = Counter(
    "emotion_http_requests",
    "HTTP requests answered, by endpoint (route), method and status.",
    ["endpoint", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "emotion_http_request_duration_seconds",
    "Time to answer a request, by endpoint (route).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "emotion_model_inference_seconds",
    "Model time per clip, by model (results from the cache are not counted).",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
AUDIO_SECONDS = Counter("emotion_audio_seconds", "Seconds of audio analysed.")
MODEL_LOADED = Gauge(
    "emotion_model_loaded",
    "1 when the model of the preset is loaded, 0 when it failed to load.",
    ["model"],
    multiprocess_mode="livemin",  # any live worker without the model shows 0
)
BATCH_SEGMENTS = Histogram(
    "emotion_batch_segments",
    "Segments per /batch_analyze request.",
    buckets=(1, 2, 3, 5, 10, 20, 50, 100),
)
CACHE_HITS = Counter("emotion_cache_hits", "Analyses answered from the result cache.")
STREAMS = Counter("emotion_streams", "/stream WebSockets ended, by outcome (ok, or the error code).", ["outcome"])
STREAMS_OPEN = Gauge("emotion_streams_open", "/stream WebSockets open now.", multiprocess_mode="livesum")
STREAM_SEGMENTS = Counter("emotion_stream_segments", "Segments analysed and sent on /stream WebSockets.")
CACHE_ERRORS = Counter("emotion_cache_errors", "Result-cache lookups or stores that failed (Redis unreachable).")


def record_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    REQUESTS.labels(endpoint, method, str(status)).inc()
    REQUEST_SECONDS.labels(endpoint).observe(seconds)


def record_analysis(result: AnalysisResult) -> None:
    """Count one analysed clip: its audio seconds, model times, or the cache hit."""
    AUDIO_SECONDS.inc(result.audio.duration)
    if result.cached:
        CACHE_HITS.inc()
        return
    for model in result.models:
        INFERENCE_SECONDS.labels(model.name).observe(model.inference_time)


def record_cache_error() -> None:
    """Count one failed lookup or store of the result cache (served as a miss)."""
    CACHE_ERRORS.inc()


def record_batch(segments: int) -> None:
    """Note the size of one /batch_analyze request."""
    BATCH_SEGMENTS.observe(segments)


def record_stream_start() -> None:
    """Count one /stream WebSocket opened (and holding a slot)."""
    STREAMS_OPEN.inc()


def record_stream_end(outcome: str) -> None:
    """Count one /stream WebSocket ended: ``ok`` or its error code (TOO_MANY_STREAMS never opened)."""
    STREAMS.labels(outcome).inc()
    if outcome != "TOO_MANY_STREAMS":
        STREAMS_OPEN.dec()


def record_stream_segment(result: AnalysisResult) -> None:
    """Count one segment sent on a stream, and its analysis like any other."""
    STREAM_SEGMENTS.inc()
    record_analysis(result)


def record_models(loaded: Iterable[str], failed: Iterable[str]) -> None:
    """Set the load status of each model of the preset (1 loaded, 0 failed)."""
    for name in loaded:
        MODEL_LOADED.labels(name).set(1)
    for name in failed:
        MODEL_LOADED.labels(name).set(0)


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, summed over all workers; and its content type."""
    if MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
