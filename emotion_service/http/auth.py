"""API keys: which keys the service accepts, and checking a presented key in constant time.

Keys come from ``API_KEYS`` (comma-separated) and ``API_KEYS_FILE`` (one a line, ``#``
comments). Only their SHA-256 digests are kept here, and keys are never logged: a key is known
in logs and rate-limit storage by :meth:`ApiKeys.identify`'s short digest only.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from ..config import Settings, check_api_keys, is_loopback
from ..errors import ConfigError

HEADER = "X-API-Key"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys (as digests) and whether requests must present one.

    Attributes:
        enabled: Requests to endpoints that are not exempt need a valid key.
        reason: Why, in words, for the start script ("2 keys", "loopback only", "AUTH=off").
        exempt: Endpoint names served without a key.
    """

    enabled: bool
    reason: str
    exempt: tuple[str, ...] = ()
    digests: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def count(self) -> int:
        return len(self.digests)

    def identify(self, presented: str | None) -> str | None:
        """Return a short, non-secret id of ``presented`` if it is an accepted key, else None.

        Every accepted key is compared, with :func:`hmac.compare_digest` over equal-length
        digests, so the time taken says nothing about which key matched or how much of it.
        """
        if not presented or not self.digests:
            return None
        candidate = _digest(presented)
        matched = False
        for digest in self.digests:
            matched |= hmac.compare_digest(candidate, digest)
        return candidate.hex()[:16] if matched else None

    def describe(self) -> str:
        """One line for the start script, e.g. ``API keys: on (2 keys)``."""
        return f"API keys: {'on' if self.enabled else 'off'} ({self.reason})"


def read_keys_file(path: str) -> tuple[str, ...]:
    """Read one key a line; blank lines and ``#`` comments are skipped.

    Raises:
        ConfigError: The file cannot be read, holds no key, or a key is malformed.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"API_KEYS_FILE={path!r} cannot be read: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"API_KEYS_FILE={path!r} is not UTF-8 text; write one key a line.") from None
    keys = tuple(line.split("#", 1)[0].strip() for line in lines)
    keys = tuple(key for key in keys if key)
    if not keys:
        raise ConfigError(f"API_KEYS_FILE={path!r} holds no key; write one key a line (# starts a comment).")
    try:
        check_api_keys(keys)
    except ValueError as exc:
        raise ConfigError(f"API_KEYS_FILE={path!r} is invalid: {exc}.") from None
    return keys


def load_api_keys(settings: Settings) -> ApiKeys:
    """Work out from the settings whether keys are required, and which.

    Raises:
        ConfigError: The keys file is unusable (see :func:`read_keys_file`).
    """
    keys = settings.api_keys + (read_keys_file(settings.api_keys_file) if settings.api_keys_file else ())
    digests = tuple(dict.fromkeys(_digest(key) for key in keys))
    exempt = settings.auth_exempt
    if settings.auth == "off":
        return ApiKeys(enabled=False, reason="AUTH=off", exempt=exempt, digests=digests)
    if not digests:
        # Settings.validate() already refused a non-loopback HOST without keys (or AUTH=on).
        where = "loopback only" if is_loopback(settings.host) else f"HOST={settings.host}"
        return ApiKeys(enabled=False, reason=where, exempt=exempt)
    reason = f"{len(digests)} key{'s' if len(digests) != 1 else ''}"
    return ApiKeys(enabled=True, reason=reason, exempt=exempt, digests=digests)
