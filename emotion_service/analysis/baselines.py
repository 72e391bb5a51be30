"""Per-candidate baselines: a candidate's running feature statistics, and nothing else.

A platform that names a ``candidate_id`` gets each clip judged against that candidate's usual
voice. What is kept is, per model, the number of clips seen and, for each emotion, the sum of
their encoder features as the model's baseline path reads them (a 768-number projection: 256 for
each of the three heads that answer as one), weighted by the model's probability of that emotion,
with those probabilities' sums (25 kB for the 8 labels of ``default``; never
audio; a head with a plain-mean baseline keeps the plain sum instead) and the version of the head
that formed them (another head's start afresh), under a keyed hash of the
id (HMAC-SHA256 with ``BASELINE_SECRET``: the store never holds the platform's id), for
``BASELINE_TTL_HOURS`` after the last clip, and deleted at once by ``DELETE /candidates/<id>``.

``MemoryBaselineStore`` keeps them in this process; ``RedisBaselineStore`` shares them between
workers and instances (the cache's Redis). A store that fails behaves as empty and reports the
failure through ``on_error``: the analysis then goes on per session or per clip.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from ..errors import BaselineUnavailable
from ..models.base import BaselineStats

logger = logging.getLogger(__name__)

PREFIX = "emotion:baseline:v1:"
MAX_CANDIDATE_ID = 256
FIELDS = ("clips", "total", "shape", "mass", "source")
UNAVAILABLE = "The store of candidate baselines (Redis) cannot be reached; try again in a minute."


def candidate_key(candidate_id: str, secret: bytes) -> str:
    """The store's name for a candidate: a keyed hash, so the store never holds the id itself."""
    return hmac.new(secret, candidate_id.encode("utf-8"), hashlib.sha256).hexdigest()


class BaselineStore(Protocol):
    """Running statistics by (model, candidate key)."""

    def key(self, candidate_id: str) -> str: ...

    def get(self, model: str, key: str) -> BaselineStats | None: ...

    def add(self, model: str, key: str, stats: BaselineStats) -> None: ...

    def delete(self, models: Iterable[str], key: str) -> bool: ...


class MemoryBaselineStore:
    """Baselines in this process: at most ``max_entries``, each forgotten ``ttl_seconds`` after its last clip."""

    def __init__(self, ttl_seconds: float, secret: bytes | None = None, max_entries: int = 10_000) -> None:
        self.secret = secret or secrets.token_bytes(32)  # a random one lives as long as the process
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, str], tuple[float, BaselineStats]] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, candidate_id: str) -> str:
        return candidate_key(candidate_id, self.secret)

    def get(self, model: str, key: str) -> BaselineStats | None:
        with self._lock:
            item = self._items.get((model, key))
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[(model, key)]
                return None
            return item[1]

    def add(self, model: str, key: str, stats: BaselineStats) -> None:
        with self._lock:
            item = self._items.pop((model, key), None)
            if item is not None and item[0] >= time.monotonic() and item[1].fits(stats):
                stats = item[1] + stats  # alive and from the same head: add to it
            self._items[(model, key)] = (time.monotonic() + self.ttl_seconds, stats)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def delete(self, models: Iterable[str], key: str) -> bool:
        with self._lock:
            found = [self._items.pop((model, key), None) for model in models]
        return any(item is not None for item in found)


class RedisBaselineStore:
    """Baselines in Redis (shared by every worker and instance), each with a time to live.

    Args:
        url: ``redis://host:port/db``.
        ttl_seconds: How long a baseline lives after its last clip.
        secret: The key of the candidates' hashes; None: a random one kept in Redis, shared by
            every worker (set ``BASELINE_SECRET`` so that Redis never holds it).
        on_error: Called once per failure (Redis unreachable): the clip is then analysed without it.
    """

    def __init__(
        self, url: str, ttl_seconds: float, secret: bytes | None = None, on_error: Callable[[], None] | None = None
    ) -> None:
        import redis

        self.secret = secret
        self.ttl_seconds = max(1, int(ttl_seconds))
        self.on_error = on_error
        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._errors = (redis.RedisError, OSError)
        self._watch_error = redis.WatchError

    def key(self, candidate_id: str) -> str:
        if self.secret is None:
            try:
                # The first worker to get here chooses it; every other worker reads the same one.
                self._client.set(PREFIX + "secret", secrets.token_bytes(32), nx=True)
                self.secret = self._client.get(PREFIX + "secret")
            except self._errors as exc:
                self._failed(exc)
                raise BaselineUnavailable(UNAVAILABLE) from None
        assert self.secret is not None
        return candidate_key(candidate_id, self.secret)

    def _name(self, model: str, key: str) -> str:
        return f"{PREFIX}{model}:{key}"

    def _failed(self, exc: Exception) -> None:
        if self.on_error is not None:
            self.on_error()
        logger.warning("candidate baselines unavailable (Redis): analysing without them: %s", exc)

    def get(self, model: str, key: str) -> BaselineStats | None:
        try:
            raw = self._client.hmget(self._name(model, key), *FIELDS)
        except self._errors as exc:
            self._failed(exc)
            return None
        return _stats(raw)

    def add(self, model: str, key: str, stats: BaselineStats) -> None:
        name = self._name(model, key)
        shape = stats.total.shape
        try:
            with self._client.pipeline() as pipe:
                for _ in range(5):  # optimistic: another worker may add to the same candidate
                    try:
                        pipe.watch(name)
                        old = _stats(pipe.hmget(name, *FIELDS))
                        current = old + stats if old is not None and old.fits(stats) else stats
                        fields = {
                            "clips": current.clips,
                            "total": current.total.astype(np.float32).tobytes(),
                            "shape": ",".join(map(str, shape)),
                            "source": current.source,
                        }
                        pipe.multi()
                        if current.mass is None:
                            pipe.hdel(name, "mass")
                        else:
                            fields["mass"] = current.mass.astype(np.float32).tobytes()
                        pipe.hset(name, mapping=fields)
                        pipe.expire(name, self.ttl_seconds)
                        pipe.execute()
                        return
                    except self._watch_error:
                        continue
        except self._errors as exc:
            self._failed(exc)

    def delete(self, models: Iterable[str], key: str) -> bool:
        names = [self._name(model, key) for model in models]
        try:
            return bool(names) and bool(self._client.delete(*names))
        except self._errors as exc:
            self._failed(exc)
            raise BaselineUnavailable(UNAVAILABLE) from None


def _stats(raw: list[bytes | None]) -> BaselineStats | None:
    """Statistics from their Redis fields (clips; total and mass as float32 bytes; shape; the head's
    version); None if absent."""
    clips, total, shape, mass, source = raw
    if clips is None or total is None or shape is None:
        return None
    dims = tuple(int(d) for d in shape.decode().split(","))
    return BaselineStats(
        int(clips),
        np.frombuffer(total, dtype=np.float32).reshape(dims).copy(),
        None if mass is None else np.frombuffer(mass, dtype=np.float32).copy(),
        "" if source is None else source.decode(),
    )


def make_baseline_store(
    ttl_hours: float,
    redis_url: str | None = None,
    secret: str | None = None,
    on_error: Callable[[], None] | None = None,
) -> BaselineStore | None:
    """The store the settings ask for: None when ``ttl_hours`` is 0 (baselines off), Redis when a URL is given."""
    if ttl_hours <= 0:
        return None
    key = secret.encode("utf-8") if secret else None
    if redis_url:
        return RedisBaselineStore(redis_url, ttl_hours * 3600, key, on_error)
    return MemoryBaselineStore(ttl_hours * 3600, key)
