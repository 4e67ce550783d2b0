"""Orq unreachable or slow: refused connections, timeouts, a response trickling in.

The workers here run with TIMEOUT = (1, 1.5), so the client's whole-exchange deadline is
2.5 s; the "slow" worker has a 60 s read timeout instead and only Celery's soft time limit
(2 s) can free it.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from django_orq_contacts import tasks
from django_orq_contacts.models import ContactSync
from tests.e2e.harness import wait_for

from .support import assert_converged, make_user, requests_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()
# A contact's answer is ~250 bytes: at 0.2 s a byte it would take close to a minute.
TRICKLE = 0.2


def test_connection_refused_is_retried_until_orq_is_back(orq_server, stack):
    with orq_server.down():
        jay = make_user("jay")
        row = wait_for(
            lambda: ContactSync.objects.filter(user_id=jay.pk, attempts__gte=2).first(),
            what="two refused attempts",
        )
        assert row.status == "pending"
        assert "ConnectionError" in row.last_error
    # No sweeper needed: the broker retries are still running.
    assert_converged(orq_server)


def test_read_timeout_is_retried_and_makes_one_contact(orq_server, stack):
    # The server sleeps past the read timeout, then stores the contact anyway.
    orq_server.add_fault("delay", seconds=2.0, times=1)
    mark = stack.worker.mark()
    kim = make_user("kim")

    assert_converged(orq_server)
    assert any(e.kind == "retry" for e in stack.worker.events(mark))
    # The timed-out request is recorded once the server has finished it.
    wait_for(lambda: len(requests_for(orq_server, kim.pk)) == 2, what="both requests")
    assert len(orq_server.contacts()) == 1


def test_trickling_response_is_cut_by_the_client_deadline(orq_server, stack):
    orq_server.add_fault("trickle", seconds=TRICKLE, times=1)
    mark = stack.worker.mark()
    lea = make_user("lea")

    # Well before the trickle would have ended, the worker gave up on it and retried.
    assert_converged(orq_server, timeout=15)
    assert any(e.kind == "retry" for e in stack.worker.events(mark))
    # The server records the trickled answer once its next byte finds the socket closed.
    faults = wait_for(
        lambda: (
            (found := [r.fault for r in requests_for(orq_server, lea.pk)])
            and len(found) == 2
            and found
        ),
        what="both requests",
    )
    assert sorted(faults, key=str) == [None, "trickle"]


@pytest.mark.parametrize("stack", ["slow"], indirect=True)
def test_trickling_response_is_cut_by_the_soft_time_limit(orq_server, stack, monkeypatch):
    # Time limits travel in the message, from the publisher's task options: a short one here.
    monkeypatch.setattr(tasks.sync_contact, "soft_time_limit", 2)
    monkeypatch.setattr(tasks.sync_contact, "_exec_options", None)
    orq_server.add_fault("trickle", seconds=TRICKLE, times=1)
    mark = stack.worker.mark()
    max_ = make_user("max")

    wait_for(
        lambda: "SoftTimeLimitExceeded" in stack.worker.log_since(mark),
        timeout=15,
        what="the soft time limit to fire",
    )
    # The task let the row go (no lease left to wait for); still pending, not failed.
    row = wait_for(
        lambda: ContactSync.objects.filter(user_id=max_.pk, lease_until=None).first(),
        what="the row to be released",
    )
    assert row.status == "pending"
    # The only pool process is free again: the sweeper runs on it and converges.
    stack.sweep()
    assert_converged(orq_server, timeout=15)
