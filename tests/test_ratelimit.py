"""The shared rate limiter: one pacing for every process, and a 429 pauses them all."""

from __future__ import annotations

import multiprocessing
import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_orq_contacts import ratelimit
from django_orq_contacts.client import OrqClient
from django_orq_contacts.exceptions import OrqRateLimitError, OrqThrottledError

RATE = "20/s"


def _acquire_many(count: int, rate: str, out: multiprocessing.Queue) -> None:
    """In a fresh process: take ``count`` slots and report when each was granted."""
    import django
    from django.conf import settings

    django.setup()
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "RATE_LIMIT": rate}
    times = []
    for _ in range(count):
        ratelimit.acquire()
        times.append(time.time())
    out.put(times)


@pytest.fixture
def limited(settings):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "RATE_LIMIT": RATE}
    ratelimit.reset()
    return settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100/m", (100, 60.0)), ("10/s", (10, 1.0)), ("10/5s", (10, 5.0)), ("1000/hour", (1000, 3600.0)),
     (None, None)],
)
def test_parse_rate(text, expected):
    assert ratelimit.parse_rate(text) == expected


@pytest.mark.parametrize("text", ["100", "0/s", "ten/s", "5/fortnight", "-1/m"])
def test_parse_rate_rejects_nonsense(text):
    with pytest.raises(ImproperlyConfigured):
        ratelimit.parse_rate(text)


def test_three_processes_share_one_limit(limited):
    """Three processes asking at once get slots no closer than the limit allows, in total."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_acquire_many, args=(10, RATE, out)) for _ in range(3)]
    for proc in procs:
        proc.start()
    grants = sorted(t for _ in procs for t in out.get(timeout=60))
    for proc in procs:
        proc.join(timeout=30)
    assert len(grants) == 30
    # In any rolling second, at most 20 calls (+1 for the boundary) across all processes.
    for i, start in enumerate(grants):
        in_window = [t for t in grants[i:] if t < start + 1.0]
        assert len(in_window) <= 21
    # And they were paced, not all granted at once: 30 calls at 20/s span more than a second.
    assert grants[-1] - grants[0] >= 1.0


def test_a_429_pauses_every_process(limited, orq_server):
    """One process is refused; the pause it learned is in the cache for all the others."""
    orq_server.add_fault("status", status=429, headers={"Retry-After": "120"})
    with pytest.raises(OrqRateLimitError):
        OrqClient().request("GET", "/v2/contacts/x")
    # Another caller (any process: the state is in the shared cache) does not even try.
    with pytest.raises(OrqThrottledError) as excinfo:
        ratelimit.acquire(max_wait=1)
    assert 100 < excinfo.value.retry_after <= 120
    calls_before = len(orq_server.api_requests())
    with pytest.raises(OrqThrottledError):
        OrqClient().request("GET", "/v2/contacts/x")
    assert len(orq_server.api_requests()) == calls_before


def test_remaining_zero_header_pauses_until_reset(limited):
    ratelimit.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "90"})
    with pytest.raises(OrqThrottledError):
        ratelimit.acquire(max_wait=1)
    ratelimit.reset()
    assert ratelimit.acquire(max_wait=1) < 1


def test_server_side_limit_is_respected_by_the_client(limited, orq_server):
    """Against a server enforcing 20/s, 40 calls paced by the limiter draw no 429."""
    orq_server.configure(rate_limit=20, rate_window=1.0)
    client = OrqClient()
    for i in range(40):
        client.request("POST", "/v2/contacts", {"external_id": f"rl-{i}"})
    assert orq_server.stats()["rate_limited"] == 0


def test_an_absurd_retry_after_is_capped(limited):
    """One header asking for 28 hours must not stop every process for a day."""
    from django_orq_contacts import state

    ratelimit.observe(429, {"Retry-After": "100000"})
    with pytest.raises(OrqThrottledError) as excinfo:
        ratelimit.acquire(max_wait=1)
    assert 3500 < excinfo.value.retry_after <= 3600
    assert state.backoff(1, retry_after=100000) == 3600
