"""A cache of model outputs for audio that was already analysed.

The key is a hash of the decoded samples (so the same recording sent as WAV or as base64 FLAC
is one entry), the versions of the loaded models and the options that change the outputs. The
value is what the models said — never the audio — as JSON, so a shared Redis holds no pickles.

``MemoryCache`` (an LRU per process) is the default; ``RedisCache`` shares entries between
workers and instances. A cache that fails (Redis down) behaves as a miss, and is left alone for a
few seconds before it is tried again: requests are still served, just not faster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


def cache_key(
    signals: Sequence[np.ndarray], index: int, model_versions: Iterable[tuple[str, str]], options: str = ""
) -> str:
    """Key of the outputs for ``signals[index]``.

    When the clips are analysed together as one speaker, every clip's outputs depend on the
    others (speaker normalisation), so the key covers all of them; a single clip covers itself.
    """
    digest = hashlib.sha256()
    for name, version in sorted(model_versions):
        digest.update(f"{name}={version};".encode())
    digest.update(f"{options};{index};{len(signals)};".encode())
    for signal in signals:
        digest.update(np.ascontiguousarray(signal, dtype=np.float32).tobytes())
        digest.update(b"|")
    return "emotion:v1:" + digest.hexdigest()


class ResultCache(Protocol):
    """Where cached outputs live: JSON-able dicts by key."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def set(self, key: str, value: dict[str, Any]) -> None: ...


class MemoryCache:
    """A thread-safe LRU of at most ``max_entries`` results in this process."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            text = self._items.get(key)
            if text is None:
                return None
            self._items.move_to_end(key)
        return json.loads(text)

    def set(self, key: str, value: dict[str, Any]) -> None:
        text = json.dumps(value)  # a copy: callers cannot mutate what is cached
        with self._lock:
            self._items[key] = text
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class RedisCache:
    """Results in Redis with a time to live, shared by every worker and instance.

    When Redis cannot be reached, every lookup is a miss and nothing is stored for
    ``pause_seconds`` (one warning logged and ``on_error`` called per failure), then Redis is
    tried again: a Redis that hangs costs one request the 1 s timeout per pause, not every
    request two of them.

    Args:
        url: ``redis://host:port/db``.
        ttl_seconds: How long an entry lives.
        pause_seconds: How long to leave Redis alone after it failed.
        on_error: Called once per failure (the server counts them in ``emotion_cache_errors_total``).
    """

    def __init__(
        self,
        url: str,
        ttl_seconds: int = 86_400,
        pause_seconds: float = 5.0,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        import redis

        self.on_error = on_error
        self.ttl_seconds = ttl_seconds
        self.pause_seconds = pause_seconds
        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._errors = (redis.RedisError, OSError)
        self._paused_until = 0.0

    def _paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def _failed(self, exc: Exception, consequence: str) -> None:
        self._paused_until = time.monotonic() + self.pause_seconds
        if self.on_error is not None:
            self.on_error()
        logger.warning("result cache unavailable, %s; Redis is tried again in %g s: %s",
                       consequence, self.pause_seconds, exc)  # fmt: skip

    def get(self, key: str) -> dict[str, Any] | None:
        if self._paused():
            return None
        try:
            text = self._client.get(key)
        except self._errors as exc:
            self._failed(exc, "treating as a miss")
            return None
        return json.loads(text) if text else None

    def set(self, key: str, value: dict[str, Any]) -> None:
        if self._paused():
            return
        try:
            self._client.set(key, json.dumps(value), ex=self.ttl_seconds)
        except self._errors as exc:
            self._failed(exc, "result not stored")


def make_cache(
    size: int, redis_url: str | None = None, ttl_seconds: int = 86_400, on_error: Callable[[], None] | None = None
) -> ResultCache | None:
    """The cache the settings ask for: None when ``size`` is 0, Redis when a URL is given.

    ``on_error`` is called once each time Redis fails (see :class:`RedisCache`).
    """
    if size <= 0:
        return None
    if redis_url:
        return RedisCache(redis_url, ttl_seconds, on_error=on_error)
    return MemoryCache(size)
