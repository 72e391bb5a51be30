"""Signed webhook calls when a job ends, to allowed targets only.

Each call is a JSON ``POST`` signed with HMAC-SHA256 over ``"<timestamp>." + body`` with
``WEBHOOK_SECRET``; the header ``X-Emotion-Signature: t=<timestamp>,v1=<hex>`` carries both, so
a receiver can check the body is ours and fresh (:func:`verify` does it). Failed calls are retried
with exponential backoff on a background thread.

Targets are checked twice (when the job is submitted and before each call): ``http``/``https``
only, host in ``WEBHOOK_ALLOWED_HOSTS``, and no loopback, private, link-local, multicast or
reserved address unless the host is listed exactly and ``WEBHOOK_ALLOW_PRIVATE`` is on, so a
client cannot make the service call internal addresses (cloud metadata, admin ports). Redirects
are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from ..config import Settings
from ..errors import InvalidRequest
from .store import Job, job_json

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Emotion-Signature"
Resolver = Callable[[str, int], list[str]]


class InvalidWebhook(InvalidRequest):
    """The webhook URL is not one this service may call."""

    error_code = "INVALID_WEBHOOK_URL"


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class WebhookPolicy:
    """Which webhook targets may be called.

    Args:
        allowed_hosts: Host names or IPs; ``*.example.com`` matches subdomains, ``*`` any public host.
        allow_private: Let hosts listed exactly resolve to private, loopback or link-local addresses.
    """

    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    resolver: Resolver = resolve

    def _listed(self, host: str) -> tuple[bool, bool]:
        """Whether ``host`` is allowed, and whether it is listed exactly (not by a wildcard)."""
        exact = host in self.allowed_hosts
        wildcard = "*" in self.allowed_hosts or any(
            entry.startswith("*.") and host.endswith(entry[1:]) for entry in self.allowed_hosts
        )
        return exact or wildcard, exact

    def check(self, url: str) -> str:
        """Return ``url`` if it may be called.

        Raises:
            InvalidWebhook: It may not; the message says why and what is accepted.
        """
        if not self.allowed_hosts:
            raise InvalidWebhook(
                "This server does not send webhooks: its operator has not set WEBHOOK_ALLOWED_HOSTS "
                "(and WEBHOOK_SECRET); poll GET /jobs/<job_id> instead."
            )
        if not isinstance(url, str) or len(url) > 2048:
            raise InvalidWebhook("webhook_url must be an http(s) URL of at most 2048 characters.")
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidWebhook(f"webhook_url {url!r} is not a valid URL.") from None
        if parts.scheme not in ("http", "https"):
            raise InvalidWebhook(f"webhook_url must use http or https, not {parts.scheme or 'no scheme'!r}.")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host or parts.username is not None or parts.password is not None:
            raise InvalidWebhook("webhook_url needs a host and must not carry a user name or password.")
        allowed, exact = self._listed(host)
        if not allowed:
            raise InvalidWebhook(
                f"webhook_url host {host!r} is not allowed; this server calls only {', '.join(self.allowed_hosts)} "
                "(WEBHOOK_ALLOWED_HOSTS)."
            )
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError):
            raise InvalidWebhook(f"webhook_url host {host!r} cannot be resolved; check the name.") from None
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if ip.is_global and not ip.is_multicast:
                continue
            if not (exact and self.allow_private):
                raise InvalidWebhook(
                    f"webhook_url host {host!r} resolves to the non-public address {ip}; webhooks go to public "
                    "addresses only, unless the host is listed exactly in WEBHOOK_ALLOWED_HOSTS and "
                    "WEBHOOK_ALLOW_PRIVATE is on."
                )
        if not addresses:
            raise InvalidWebhook(f"webhook_url host {host!r} has no address; check the name.")
        return url


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` keyed with ``secret``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Emotion-Signature`` value: ``t=<timestamp>,v1=<hex>``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """Check a webhook call: the signature matches ``body`` and is at most ``tolerance`` s old.

    Receivers can copy this function (it needs only the standard library).
    """
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), fields.get("v1", ""))


class WebhookSender:
    """Posts signed JSON to webhook URLs, retrying failures with exponential backoff.

    Args:
        secret: The HMAC key (``WEBHOOK_SECRET``).
        policy: Allowed targets, checked again before every call (DNS may have changed).
        attempts: Calls before giving up.
        backoff: Seconds before the first retry; doubled each time, at most ``max_delay``.
        timeout: Seconds per call.
    """

    RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

    def __init__(
        self,
        secret: str,
        policy: WebhookPolicy,
        *,
        attempts: int = 6,
        backoff: float = 2.0,
        max_delay: float = 300.0,
        timeout: float = 10.0,
    ) -> None:
        self.secret, self.policy = secret, policy
        self.attempts, self.backoff, self.max_delay, self.timeout = attempts, backoff, max_delay, timeout
        self._stop = threading.Event()

    def deliver(self, url: str, payload: dict[str, Any], event: str) -> bool:
        """Post ``payload`` to ``url`` until it is accepted (2xx) or the attempts run out; True if accepted."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        delivery = uuid.uuid4().hex
        for attempt in range(1, self.attempts + 1):
            try:
                self.policy.check(url)
            except InvalidWebhook as exc:
                logger.warning("webhook %s not sent: %s", delivery, exc.message)
                return False
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "emotion-api-webhook/1",
                "X-Emotion-Event": event,
                "X-Emotion-Delivery": delivery,
                SIGNATURE_HEADER: signature_header(self.secret, body),
            }
            try:
                response = requests.post(url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False)
                status: int | str = response.status_code
                response.close()
                if 200 <= response.status_code < 300:
                    logger.info("webhook %s (%s) accepted on attempt %d", delivery, event, attempt)
                    return True
                retry = response.status_code in self.RETRY_STATUSES
            except requests.RequestException as exc:
                status, retry = type(exc).__name__, True
            if not retry or attempt == self.attempts:
                logger.warning("webhook %s (%s) given up after attempt %d: %s", delivery, event, attempt, status)
                return False
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_delay)
            logger.info(
                "webhook %s (%s) attempt %d got %s; retrying in %.1f s", delivery, event, attempt, status, delay
            )
            if self._stop.wait(delay):
                return False
        return False

    def send(self, url: str, payload: dict[str, Any], event: str) -> threading.Thread:
        """Deliver in the background; returns the thread (tests join it)."""
        thread = threading.Thread(target=self.deliver, args=(url, payload, event), name="webhook", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop retrying (pending calls give up at their next wait)."""
        self._stop.set()


def notifier(settings: Settings) -> Callable[[Job], None] | None:
    """What to call when a job ends: a signed webhook to its ``webhook_url``, if any; None without a secret."""
    if not settings.webhook_secret:
        return None
    sender = WebhookSender(
        settings.webhook_secret, WebhookPolicy(settings.webhook_allowed_hosts, settings.webhook_allow_private)
    )

    def notify(job: Job) -> None:
        if job.webhook_url:
            sender.send(job.webhook_url, job_json(job), f"job.{job.status.value}")

    return notify
