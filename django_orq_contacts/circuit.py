"""A circuit breaker shared by every process through the Django cache.

During an outage (every call a 5xx or a timeout) each worker retrying on its own would keep
hammering the API and burn every user's retry budget, ending with the whole site "failed"
for what was Orq's problem. After ``BREAKER_THRESHOLD`` transient failures in a row (across
all processes) the circuit opens: calls fail fast with ``OrqCircuitOpenError`` (which does
not count as an attempt), and one probe call per ``BREAKER_COOLDOWN`` seconds tests whether
the API is back. The first success closes the circuit for everyone.
"""

from __future__ import annotations

import time

from django.core.cache import BaseCache, caches

from .conf import get_setting
from .exceptions import OrqCircuitOpenError

PREFIX = "orq_contacts:cb"
FAILURES_KEY = f"{PREFIX}:failures"
OPEN_KEY = f"{PREFIX}:open_until"
PROBE_KEY = f"{PREFIX}:probe"
AUTH_ALERT_KEY = f"{PREFIX}:auth_alert"


# Each process looks at the shared state at most this often on the happy path: two cache
# reads per call cost more CPU than the call itself in a bulk sync, and an outage is
# noticed a quarter of a second later at worst.
VIEW_TTL = 0.25


class _View:
    """This process's recent reading of the shared breaker state."""

    def __init__(self) -> None:
        self.read_at = 0.0
        self.open_until: float | None = None
        self.failures = 0

    def refresh(self, cache: BaseCache) -> _View:
        now = time.monotonic()
        if now - self.read_at >= VIEW_TTL:
            values = cache.get_many([OPEN_KEY, FAILURES_KEY])
            self.open_until = values.get(OPEN_KEY)
            self.failures = int(values.get(FAILURES_KEY) or 0)
            self.read_at = now
        return self

    def forget(self) -> None:
        self.read_at = 0.0


_view = _View()


def _cache() -> BaseCache:
    return caches[get_setting("CACHE_ALIAS")]


def before_call() -> None:
    """Raise OrqCircuitOpenError unless the circuit is closed or this call is the probe."""
    threshold = int(get_setting("BREAKER_THRESHOLD"))
    if threshold <= 0:
        return
    cache = _cache()
    open_until = _view.refresh(cache).open_until
    if not open_until:
        return
    cooldown = float(get_setting("BREAKER_COOLDOWN"))
    remaining = float(open_until) - time.time()
    # One caller in the whole site wins the probe slot per cooldown period.
    if remaining <= 0 and cache.add(PROBE_KEY, 1, timeout=max(1, int(cooldown))):
        return
    raise OrqCircuitOpenError(
        "Orq looks down (circuit open); not calling it", retry_after=max(remaining, cooldown)
    )


def record_success() -> None:
    cache = _cache()
    view = _view.refresh(cache)
    if view.open_until or view.failures:
        cache.delete_many([OPEN_KEY, FAILURES_KEY, PROBE_KEY])
        view.open_until, view.failures = None, 0


def record_failure() -> None:
    """Count one transient failure; open the circuit at the threshold."""
    threshold = int(get_setting("BREAKER_THRESHOLD"))
    if threshold <= 0:
        return
    cache = _cache()
    cooldown = float(get_setting("BREAKER_COOLDOWN"))
    # The count expires, so scattered failures over a long time never open the circuit.
    cache.add(FAILURES_KEY, 0, timeout=max(60, int(cooldown * 4)))
    try:
        failures = cache.incr(FAILURES_KEY)
    except ValueError:  # expired between add and incr
        failures = 1
        cache.set(FAILURES_KEY, 1, timeout=max(60, int(cooldown * 4)))
    _view.failures = failures
    if failures >= threshold:
        _view.open_until = time.time() + cooldown
        cache.set(OPEN_KEY, _view.open_until, timeout=int(cooldown * 10) + 60)
        cache.delete(PROBE_KEY)


def first_auth_alert(interval: float) -> bool:
    """True for one caller per ``interval`` across every process (a rejected key is alerted
    once for the site, not by each worker that meets it)."""
    return bool(_cache().add(AUTH_ALERT_KEY, 1, timeout=max(1, int(interval))))


def reset() -> None:
    _cache().delete_many([OPEN_KEY, FAILURES_KEY, PROBE_KEY, AUTH_ALERT_KEY])
    _view.forget()


def is_open() -> bool:
    return bool(_cache().get(OPEN_KEY))
