"""A sustained outage: every call a 503 for several seconds, with users saved meanwhile.

The shared circuit breaker (BREAKER_THRESHOLD = 4, BREAKER_COOLDOWN = 1 s here) stops the
workers hammering Orq after a few failures and lets one probe through per cooldown; the
calls held back use no retry attempt, so the outage alone fails no user.
"""

from __future__ import annotations

import math
import time

import pytest

from django_orq_contacts import circuit
from django_orq_contacts.models import ContactSync
from tests.e2e.harness import wait_for

from .support import assert_converged, make_user
from .worker_settings import FAULTS_ORQ_CONTACTS

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.django_db(transaction=True)]
USERS = 8
OUTAGE = 5.0


def test_sustained_outage_is_bounded_and_converges(orq_server, stack):
    orq_server.set_outage(503)
    started = time.monotonic()
    users = [make_user(f"out{n}") for n in range(USERS)]
    wait_for(circuit.is_open, what="the breaker to open")
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - started)))  # the outage goes on

    during = orq_server.stats()["by_status"].get(503, 0)
    lasted = time.monotonic() - started
    threshold = FAULTS_ORQ_CONTACTS["BREAKER_THRESHOLD"]
    cooldown = FAULTS_ORQ_CONTACTS["BREAKER_COOLDOWN"]
    # The calls that opened the breaker (plus those already in flight on each pool process),
    # then one probe per cooldown.
    bound = threshold + stack.worker.concurrency + math.ceil(lasted / cooldown)
    assert during <= bound, f"{during} calls in {lasted:.1f}s of outage (bound {bound})"
    assert not ContactSync.objects.filter(status="failed").exists()

    orq_server.set_outage(None)
    # Tasks whose broker retries ran out meanwhile were handed to the sweeper.
    stack.sweep_until(lambda: not ContactSync.objects.exclude(status="synced").exists())
    assert_converged(orq_server)
    assert len(orq_server.contacts()) == len(users)
    assert not ContactSync.objects.filter(attempts__gt=0).exists()
