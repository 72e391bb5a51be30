"""Errors that carry what a client must do to fix them.

Each class has an HTTP status and a stable ``error_code``; the HTTP layer turns any of them into
the ``{success: false, message, error_code}`` envelope. The core raises them without knowing
about HTTP.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request the service cannot serve, with a message that says how to fix it."""

    status: int = 400
    error_code: str = "BAD_REQUEST"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code


class InvalidRequest(ServiceError):
    """The request is malformed: wrong field, wrong content type, bad option."""

    error_code = "INVALID_REQUEST"


class InvalidAudio(ServiceError):
    """The audio cannot be decoded or is unusable (silent, too short, too long, NaN...)."""

    error_code = "INVALID_AUDIO"


class PayloadTooLarge(ServiceError):
    """The upload is over the configured size limit."""

    status = 413
    error_code = "PAYLOAD_TOO_LARGE"


class Unauthorized(ServiceError):
    """The request lacks a valid API key."""

    status = 401
    error_code = "UNAUTHORIZED"


class ModelUnavailable(ServiceError):
    """No emotion model is loaded, so nothing can be analysed."""

    status = 503
    error_code = "MODEL_UNAVAILABLE"


class Overloaded(ServiceError):
    """More work is queued than the service can start soon; retry after ``retry_after`` seconds."""

    status = 503
    error_code = "OVERLOADED"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BaselineUnavailable(ServiceError):
    """The store of candidate baselines (Redis) cannot be reached."""

    status = 503
    error_code = "BASELINES_UNAVAILABLE"


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and the values it accepts."""
