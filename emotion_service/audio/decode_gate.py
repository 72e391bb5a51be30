"""A cap on the uploads a server process decodes at once (``MAX_DECODES``).

Decoding costs CPU in proportion to the audio (see :mod:`emotion_service.audio`), but a flood of
long or dense uploads would still share the cores among themselves and slow every other request.
Requests take a slot for their decoding; when none frees within ``wait`` seconds they are refused
with :class:`~emotion_service.batching.Overloaded` (HTTP 503 with ``Retry-After``), so that the
flood is answered at once and the requests already decoding finish at full speed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import Overloaded

# Ordinary uploads decode in milliseconds (a 5 s WAV in ~1 ms), so a request only waits this long
# behind uploads that are really expensive.
DEFAULT_WAIT_SECONDS = 0.5


class DecodeGate:
    """At most ``max_decodes`` decodes at once; beyond them callers wait ``wait`` seconds, then 503."""

    def __init__(self, max_decodes: int, wait: float = DEFAULT_WAIT_SECONDS) -> None:
        if max_decodes < 1:
            raise ValueError("max_decodes must be at least 1")
        self.max_decodes = max_decodes
        self.wait = wait
        self._slots = threading.BoundedSemaphore(max_decodes)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one decode slot for the ``with`` block.

        Raises:
            Overloaded: Every slot stayed busy for ``wait`` seconds.
        """
        if not self._slots.acquire(timeout=self.wait):
            raise Overloaded(
                f"The server is decoding {self.max_decodes} uploads already (MAX_DECODES); retry after the "
                "number of seconds in the Retry-After header.",
                retry_after=1,
            )
        try:
            yield
        finally:
            self._slots.release()
