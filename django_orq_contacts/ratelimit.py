"""One rate limiter shared by every process (web, workers, the command) through the Django cache.

Orq counts calls per workspace in a rolling window, so the limit has to hold for all our
processes together. Calls are paced into evenly spaced slots (``period / limit`` apart, with a
small safety margin); a slot is claimed with ``cache.add``, which is atomic on every shared
backend (Redis, Memcached, database). Evenly spaced calls can never bunch up inside one
rolling window, which a fixed per-minute counter would allow at the window edges.

When the API refuses a call (429) or says no calls remain, the pause it asks for is written
to the cache too, so every process waits, not just the one that was refused.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping

from django.core.cache import BaseCache, caches

from .conf import get_setting
from .exceptions import OrqConfigurationError, OrqThrottledError
from .redaction import redact

KEY_PREFIX = "orq_contacts:rl"
PAUSE_KEY = f"{KEY_PREFIX}:paused_until"
# Spend 97% of the allowed rate: the API's clock and ours differ by network jitter, and a
# 429 costs far more than 3% of throughput.
SAFETY = 0.97
# A caller asked to wait longer than this gets an OrqThrottledError instead (a Celery task
# then retries later rather than pinning a worker).
DEFAULT_MAX_WAIT = 30.0
# Seconds between reads of the shared pause while none is known (see _shared_pause).
RECHECK = 0.25

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


def parse_rate(value: object) -> tuple[int, float] | None:
    """``"100/m"`` -> (100, 60.0); ``"10/5s"`` -> (10, 5.0); None stays None."""
    if value is None:
        return None
    match = _RATE_RE.match(str(value).lower())
    if not match or match.group(3) not in _UNITS or int(match.group(1)) < 1:
        text = f"ORQ_CONTACTS['RATE_LIMIT'] = {value!r} is not a rate such as '100/m' or '10/s'"
        raise OrqConfigurationError(redact(text))
    multiple = int(match.group(2) or 1)
    return int(match.group(1)), multiple * _UNITS[match.group(3)]


def _cache() -> BaseCache:
    return caches[get_setting("CACHE_ALIAS")]


def acquire(max_wait: float | None = None) -> float:
    """Block until this process may make one call; return the seconds waited."""
    limit = max_wait if max_wait is not None else DEFAULT_MAX_WAIT
    cache = _cache()
    waited = 0.0
    paused_until = _shared_pause(cache)
    if paused_until:
        delay = paused_until - time.time()
        if delay > limit:
            raise OrqThrottledError("rate limited by Orq; waiting for the reset", retry_after=delay)
        if delay > 0:
            time.sleep(delay)
            waited += delay
    rate = parse_rate(get_setting("RATE_LIMIT"))
    if rate is None:
        return waited
    calls, period = rate
    interval = period / (calls * SAFETY)
    now = time.time()
    # The next slot boundary, not the current slot: a call placed late in the current slot
    # would sit closer than one interval to the next one.
    slot = max(math.ceil(now / interval), int(cache.get(f"{KEY_PREFIX}:hint") or 0))
    # Walk forward to the first free slot; cache.add is the atomic claim.
    while not cache.add(f"{KEY_PREFIX}:slot:{slot}", 1, timeout=int(period) + 60):
        slot += 1
    cache.set(f"{KEY_PREFIX}:hint", slot + 1, timeout=int(period) + 60)
    delay = slot * interval - time.time()
    if delay > limit:
        raise OrqThrottledError("local rate limit: no call slot soon enough", retry_after=delay)
    if delay > 0:
        time.sleep(delay)
        waited += delay
    return waited


def observe(status: int, headers: Mapping[str, str]) -> None:
    """Share a pause with every process when the API says no calls remain."""
    lowered = {key.lower(): value for key, value in headers.items()}
    remaining = lowered.get("x-ratelimit-remaining")
    if status != 429 and remaining != "0":
        return
    from .client import parse_retry_after

    delay = parse_retry_after(headers)
    if delay is None:
        delay = _reset_delay(lowered.get("x-ratelimit-reset"))
    if delay is None:
        delay = 1.0 if status == 429 else 0.0
    if delay > 0:
        pause(min(delay, float(get_setting("RETRY_AFTER_MAX"))))


def pause(seconds: float) -> None:
    until = time.time() + seconds
    _seen.until = max(_seen.until, until)
    cache = _cache()
    current = cache.get(PAUSE_KEY)
    if not current or float(current) < until:
        cache.set(PAUSE_KEY, until, timeout=math.ceil(seconds) + 1)


def reset() -> None:
    """Forget every shared pause (tests and operators after an incident)."""
    _seen.until, _seen.checked = 0.0, -math.inf
    _cache().delete(PAUSE_KEY)


class _Seen:
    """The shared pause as this process last read it (and any it set itself)."""

    until = 0.0
    checked = -math.inf


_seen = _Seen()


def _shared_pause(cache: BaseCache) -> float:
    """The pause every process must honour, read from the cache at most every RECHECK s.

    One cache read per call cost more than the rest of the limiter when no limit is set;
    a pause set by another process is seen at most RECHECK seconds late (one set here,
    at once), and the few calls made meanwhile would only be answered 429 and pause too.
    """
    now = time.monotonic()
    if now - _seen.checked >= RECHECK:
        # The cache is the truth (pause() writes there too): a reset() by an operator in
        # another process must end this process's pause as well.
        _seen.until = float(cache.get(PAUSE_KEY) or 0.0)
        _seen.checked = now
    return _seen.until if _seen.until > time.time() else 0.0


def _reset_delay(value: str | None) -> float | None:
    # Some APIs send the reset as an epoch timestamp, others as seconds from now.
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    delay = number - time.time() if number > 1_000_000_000 else number
    return max(0.0, delay)
