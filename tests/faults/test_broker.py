"""Faults around the broker: down at commit, messages delivered twice, a backlog.

The broker-dependent scenarios run on Redis and on RabbitMQ.
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from django_orq_contacts import dispatch, pausing, tasks
from django_orq_contacts.models import ContactSync
from tests.celery_app import app as celery_app
from tests.e2e.harness import broker_at, synced_users, unused_port, wait_for, wait_for_row

from .support import assert_converged, make_user, requests_for, secrets_in

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()
BROKERS = pytest.mark.parametrize("stack", ["redis", "amqp"], indirect=True)
# Generous: guards against a request hanging on the broker; it does not measure speed.
HANG_GUARD = 10.0


def dead_broker(stack, port: int) -> str:
    if stack.is_redis:
        return f"redis://127.0.0.1:{port}/13"
    return f"amqp://guest:guest@127.0.0.1:{port}//"


@BROKERS
def test_broker_down_at_commit_converges_through_the_sweeper(orq_server, stack, caplog):
    ada = make_user("ada", first_name="Ada")
    wait_for_row(ada, "synced")
    orq_server.clear_requests()

    with unused_port() as port, broker_at(celery_app, dead_broker(stack, port)):
        started = time.monotonic()
        with transaction.atomic():  # what a view does
            ada.first_name = "Augusta"
            ada.save()
            ben = make_user("ben", first_name="Ben")
        saved_in = time.monotonic() - started
        assert dispatch.flush(HANG_GUARD)  # the publisher gave up; nothing left for later

    assert saved_in < HANG_GUARD
    assert any("Could not publish" in r.getMessage() for r in caplog.records)
    assert set(ContactSync.objects.values_list("status", flat=True)) == {"pending"}
    assert orq_server.api_requests() == []

    # The broker is back; beat sends the sweeper.
    stack.sweep_until(lambda: not ContactSync.objects.exclude(status="synced").exists())
    assert_converged(orq_server)
    assert len(requests_for(orq_server, ada.pk)) == len(requests_for(orq_server, ben.pk)) == 1


@BROKERS
def test_the_same_task_delivered_twice_makes_one_contact(orq_server, stack):
    orq_server.configure(latency=0.2)  # both deliveries are in flight together
    with pausing.paused():  # recorded as pending, not published
        cleo = make_user("cleo", first_name="Cleo")
    mark = stack.worker.mark()

    for _ in range(2):
        tasks.sync_contact.apply_async(args=[str(cleo.pk)], queue=stack.queue)

    outcomes = wait_for(
        lambda: len(stack.worker.outcomes(mark)) == 2 and stack.worker.outcomes(mark),
        what="both deliveries to finish",
    )
    assert "synced" in outcomes
    assert set(outcomes) <= {"synced", "busy", "unchanged"}
    assert_converged(orq_server)
    assert len(requests_for(orq_server, cleo.pk)) == 1
    row = ContactSync.objects.get(user_id=cleo.pk)
    assert (row.attempts, row.last_error) == (0, "")


def test_two_sweepers_at_once_send_each_user_once(orq_server, children):
    orq_server.configure(latency=0.02)
    with pausing.paused():
        users = [make_user(f"swept{n}") for n in range(12)]

    # Small batches, so the two sweepers keep claiming while the other is mid-call.
    first, second = children.together(("sweep", "3"), ("sweep", "3"))

    outcomes = first["outcomes"] + second["outcomes"]
    assert sorted(pk for _, pk, _ in outcomes) == sorted(str(u.pk) for u in users)
    assert {outcome for outcome, _, _ in outcomes} == {"synced"}
    assert first["outcomes"], "the first sweeper did nothing: they did not overlap"
    assert second["outcomes"], "the second sweeper did nothing: they did not overlap"
    assert_converged(orq_server)
    for user in users:
        assert len(requests_for(orq_server, user.pk)) == 1


@BROKERS
def test_backlog_of_updates_costs_at_most_two_calls(orq_server, stack):
    dan = make_user("dan", first_name="Dan")
    wait_for_row(dan, "synced")
    orq_server.clear_requests()

    stack.worker.stop()
    for n in range(10):
        dan.first_name = f"Dan{n}"
        dan.save()
    assert dispatch.flush(HANG_GUARD)
    waiting = stack.calls()
    # Ten saves, one user: up to ten messages (saves close together share one).
    assert 1 <= len(waiting) <= 10
    assert set(synced_users(waiting)) == {str(dan.pk)}
    # Messages at rest carry the pk only.
    assert secrets_in(stack.messages_blob()) == []

    stack.worker.start()
    assert_converged(orq_server)
    calls = requests_for(orq_server, dan.pk)
    assert 1 <= len(calls) <= 2
    assert calls[-1].json()["display_name"] == "Dan9"
    wait_for(lambda: stack.calls() == [], what="the backlog to drain")
