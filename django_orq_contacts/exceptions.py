"""Exceptions that carry what happened (status, a cut-short body, headers) and what to do next.

The split that matters is transient (retry later) versus permanent (do not retry; record the
user as failed). Celery's ``autoretry_for=(RequestException,)`` would retry a bad payload
forever, so every error is classified here instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

from .redaction import redact

BODY_LIMIT = 500


class OrqContactsError(Exception):
    """Base class of every error this app raises on purpose."""

    transient = False


class PayloadError(OrqContactsError):
    """The user's contact could not be built: permanent, no HTTP call is made."""


class OrqAPIError(OrqContactsError):
    """The Orq API (or the way to it) failed a call."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        # The body is cut short and redacted: error pages can be huge and may echo input.
        self.body = redact(body[:BODY_LIMIT])
        self.headers = dict(headers or {})
        self.retry_after = retry_after
        super().__init__(redact(message))

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (HTTP {self.status})" if self.status is not None else text


class OrqTransientError(OrqAPIError):
    """429, 5xx, timeouts and connection errors: worth retrying with backoff."""

    transient = True


class OrqRateLimitError(OrqTransientError):
    """429 Too Many Requests; ``retry_after`` holds the server's wish in seconds."""


class OrqThrottledError(OrqRateLimitError):
    """Not sent: the shared rate limiter has no call slot soon enough."""


class OrqServerError(OrqTransientError):
    """A 5xx answer."""


class OrqConnectionError(OrqTransientError):
    """No answer: connection refused, reset, DNS failure or timeout."""


class OrqCircuitOpenError(OrqTransientError):
    """Not sent: recent calls all failed, so the shared circuit breaker is open."""


class OrqPermanentError(OrqAPIError):
    """A 4xx (other than 429) or a refused redirect: retrying would not help."""


class OrqAuthError(OrqPermanentError):
    """401/403: the API key is missing, wrong or lacks the permission."""


class OrqRedirectError(OrqPermanentError):
    """A 3xx: never followed, since the Authorization header would travel with it."""


class OrqConfigurationError(ImproperlyConfigured):
    """A setting is missing or wrong; raised at call time, reported early by system checks."""
