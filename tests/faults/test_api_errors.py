"""The API answers badly: 5xx, 429 with Retry-After, 4xx, a rejected key.

Transient errors are retried through the broker until the contact converges; a Retry-After
too long for a broker countdown is handed to the sweeper; permanent errors are recorded as
failed after one call, and a rejected key is alerted once, not once per user.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import json
import math
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from django_orq_contacts import ratelimit
from django_orq_contacts.models import ContactSync
from tests.celery_app import app as celery_app
from tests.e2e.harness import redis_client, wait_for, wait_for_row

from .support import assert_converged, kill_pool_children, make_user, requests_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()
ALERT = "Orq rejected the API key"


@pytest.mark.parametrize("stack", ["redis", "amqp"], indirect=True)
def test_503_three_times_then_ok(orq_server, stack):
    orq_server.add_fault("status", status=503, times=3)
    mark = stack.worker.mark()
    gus = make_user("gus")

    assert_converged(orq_server)
    assert [r.status for r in requests_for(orq_server, gus.pk)] == [503, 503, 503, 200]
    assert sum(e.kind == "retry" for e in stack.worker.events(mark)) == 3
    row = ContactSync.objects.get(user_id=gus.pk)
    assert (row.attempts, row.last_error, row.last_status_code) == (0, "", None)


def http_date_in(seconds: int) -> tuple[str, float]:
    when = math.ceil(time.time()) + seconds
    return email.utils.formatdate(when, usegmt=True), float(when)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_for_retry_after(orq_server, form):
    if form == "seconds":
        retry_after, not_before = "2", None
    else:
        retry_after, not_before = http_date_in(2)
    orq_server.add_fault("status", status=429, headers={"Retry-After": retry_after}, times=1)
    hal = make_user("hal")

    wait_for(lambda: requests_for(orq_server, hal.pk), interval=0.01, what="the refused call")
    refused_by = time.time()  # wall clock, at or after the refusal
    assert_converged(orq_server)
    refused, accepted = requests_for(orq_server, hal.pk)
    assert (refused.status, accepted.status) == (429, 200)
    # The retry came no earlier than asked (the server's clock is monotonic: compare spans).
    waited = accepted.time - refused.time
    if not_before is None:
        assert waited >= 1.95
    else:
        assert waited >= not_before - refused_by - 0.05


def eta_messages(stack) -> list[str]:
    """ETAs of the task messages the broker or the worker holds for later."""
    etas = [raw for raw in redis_client(stack.broker_url).hvals("unacked")]
    found = [json.loads(raw)[0]["headers"].get("eta") for raw in etas]
    found += [m["request"].get("eta") for m in _scheduled(stack)]
    return [eta for eta in found if eta]


def _scheduled(stack) -> list:
    replies = celery_app.control.inspect(timeout=1.0).scheduled() or {}
    return [entry for entries in replies.values() for entry in entries]


def test_huge_retry_after_is_handed_to_the_sweeper_not_the_broker(orq_server, stack):
    orq_server.add_fault("status", status=429, headers={"Retry-After": "100000"}, times=1)
    mark = stack.worker.mark()
    ida = make_user("ida")

    wait_for(lambda: stack.worker.outcomes(mark) == ["retry"], what="the task to hand over")
    row = ContactSync.objects.get(user_id=ida.pk)
    assert row.status == "pending"  # waiting, not failed
    # Held for the sweeper, and capped at RETRY_AFTER_MAX (an hour), not the 28 h asked.
    assert timezone.now() + dt.timedelta(minutes=50) < row.next_attempt_at
    assert row.next_attempt_at < timezone.now() + dt.timedelta(hours=2)
    assert row.last_status_code == 429
    assert not any(e.kind == "retry" for e in stack.worker.events(mark))
    assert eta_messages(stack) == []
    assert stack.calls() == []
    assert len(requests_for(orq_server, ida.pk)) == 1

    # The sweeper leaves it alone until then.
    stack.sweep()
    wait_for(lambda: len(stack.worker.outcomes(mark)) == 2, what="the sweeper to run")
    assert stack.worker.outcomes(mark)[-1] == "0"
    assert len(requests_for(orq_server, ida.pk)) == 1

    try:
        # An operator who knows better clears the pause and sends what is held ...
        ratelimit.reset()
        call_command("orq_sync_contacts", "--pending", "--no-progress", stdout=io.StringIO())
        assert_converged(orq_server)
        # ... and the workers sync again at once: none of them still honours the pause.
        make_user("after")
        assert_converged(orq_server, timeout=10)
    except AssertionError:
        kill_pool_children(stack.worker)  # fresh processes, so the next scenarios can run
        raise


@pytest.mark.parametrize("status", [400, 422])
def test_rejected_payload_fails_without_retry(orq_server, stack, status):
    orq_server.add_fault("status", status=status, body='{"message": "bad contact"}', times=1)
    mark = stack.worker.mark()
    ivy = make_user("ivy")

    row = wait_for_row(ivy, "failed")
    wait_for(lambda: stack.worker.outcomes(mark) == ["failed"], what="the task to finish")
    assert (row.last_status_code, row.attempts, row.next_attempt_at) == (status, 1, None)
    assert "bad contact" in row.last_error
    assert len(requests_for(orq_server, ivy.pk)) == 1
    assert not any(e.kind == "retry" for e in stack.worker.events(mark))
    # The sweeper does not retry what no retry can fix ...
    stack.sweep()
    wait_for(lambda: len(stack.worker.outcomes(mark)) == 2, what="the sweeper to run")
    assert len(requests_for(orq_server, ivy.pk)) == 1
    # ... an operator does, once the cause is fixed.
    call_command("orq_sync_contacts", "--pending", "--no-progress", stdout=io.StringIO())
    assert_converged(orq_server)


def test_rejected_key_fails_every_user_and_alerts_once(orq_server, stack):
    orq_server.add_fault("status", status=401, times=4)
    mark = stack.worker.mark()
    users = [make_user(f"key{n}") for n in range(4)]

    for user in users:
        row = wait_for_row(user, "failed")
        assert row.last_status_code == 401
        assert len(requests_for(orq_server, user.pk)) == 1

    # The four saves may have travelled as fewer messages (see dispatch.coalesce).
    def all_finished():
        received = stack.worker.received(mark)
        return received and len(stack.worker.outcomes(mark)) == len(received)

    wait_for(all_finished, what="the tasks to finish")
    received = [e.name for e in stack.worker.received(mark)]
    assert not any(e.kind == "retry" for e in stack.worker.events(mark))
    # One ERROR record (Celery's format; the settings' console handler repeats its text).
    log = stack.worker.log_since(mark).splitlines()
    alerts = [line for line in log if ALERT in line and "ERROR/" in line]
    assert len(alerts) == 1, alerts

    call_command("orq_sync_contacts", "--pending", "--no-progress", stdout=io.StringIO())
    assert_converged(orq_server)
    # The command synced in its own process: the worker got nothing more.
    assert [e.name for e in stack.worker.received(mark)] == received
