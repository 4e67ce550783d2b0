"""The broker is down when the user's transaction commits.

Only this process's Celery app is pointed at a dead address (the shared Redis and the worker
are left alone). The request must neither fail nor hang, a warning must say what happened,
the ContactSync row must stay pending, and the recovery paths must converge it.
"""

from __future__ import annotations

import io
import logging
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction

from django_orq_contacts import dispatch, tasks
from tests.celery_app import app as celery_app

from .harness import broker_at, frozen_broker, row_of, unused_port, wait_for, wait_for_row

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()
# Generous: this guards against a hang, it does not measure speed.
HANG_GUARD = 10.0


def dead_broker(port: int) -> str:
    return f"redis://127.0.0.1:{port}/15"


def save_like_a_request(username: str) -> tuple[object, float]:
    """What a view does: save a user inside a transaction; return it and the seconds taken."""
    started = time.monotonic()
    with transaction.atomic():
        user = User.objects.create_user(username, email=f"{username}@example.com")
    return user, time.monotonic() - started


def publish_warnings(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "django_orq_contacts.dispatch"
        and r.levelno == logging.WARNING
        and "Could not publish" in r.getMessage()
    ]


def use_publish(settings, mode: str) -> None:
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "PUBLISH": mode}


def assert_left_pending(user, orq_server, caplog) -> None:
    assert publish_warnings(caplog), "no warning says the publish failed"
    row = row_of(user)
    assert row is not None
    assert row.status == "pending"
    assert orq_server.api_requests() == []


def save_while_broker_refuses(username, mode, orq_server, settings, caplog):
    """A request-like save while the broker refuses connections; checks what must hold."""
    use_publish(settings, mode)
    caplog.set_level(logging.WARNING, logger="django_orq_contacts")
    with unused_port() as port, broker_at(celery_app, dead_broker(port)):
        user, seconds = save_like_a_request(username)
        assert dispatch.flush(HANG_GUARD)
    assert seconds < HANG_GUARD
    assert_left_pending(user, orq_server, caplog)
    return user


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_pending_command_converges_after_broker_down_at_commit(mode, orq_server, settings, caplog):
    user = save_while_broker_refuses("ivy", mode, orq_server, settings, caplog)

    out = io.StringIO()
    call_command("orq_sync_contacts", "--pending", "--no-progress", stdout=out, stderr=out)
    row = wait_for_row(user, "synced")
    assert row.attempts == 0
    assert orq_server.contact(str(user.pk))["email"] == "ivy@example.com"


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_sweeper_task_on_the_worker_converges_after_broker_down_at_commit(
    mode, orq_server, settings, caplog, e2e_worker, e2e_queue
):
    user = save_while_broker_refuses("jay", mode, orq_server, settings, caplog)

    mark = e2e_worker.mark()
    # What celery beat sends once the broker is back.
    tasks.sync_pending.apply_async(queue=e2e_queue)
    wait_for_row(user, "synced")
    assert orq_server.contact(str(user.pk))["email"] == "jay@example.com"
    assert "django_orq_contacts.sync_pending" in {e.name for e in e2e_worker.received(mark)}


def test_hung_broker_does_not_hold_up_the_request(orq_server, settings, caplog):
    """A broker that accepts connections and never answers (frozen, overloaded)."""
    use_publish(settings, "thread")
    caplog.set_level(logging.WARNING, logger="django_orq_contacts")
    with frozen_broker() as broker, broker_at(celery_app, dead_broker(broker.port)):
        user, seconds = save_like_a_request("kim")
        assert seconds < HANG_GUARD
        wait_for(broker.has_client, what="the publisher to connect to the hung broker")
    # Closing the frozen listener resets the publisher's connection: it gives up and warns.
    assert dispatch.flush(HANG_GUARD)
    assert_left_pending(user, orq_server, caplog)

    call_command("orq_sync_contacts", "--pending", "--no-progress", stdout=io.StringIO())
    wait_for_row(user, "synced")
    assert orq_server.contact(str(user.pk)) is not None
    # The publisher thread survived: the next save is published and synced by the worker.
    later = User.objects.create_user("lee", email="lee@example.com")
    wait_for(lambda: orq_server.contact(str(later.pk)), what="a later save to sync")


def test_hung_broker_inline_publish_gives_up_within_publish_timeout(orq_server, settings, caplog):
    """Inline publishing runs in the request: a broker that never answers must not hang it."""
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "PUBLISH": "inline", "PUBLISH_TIMEOUT": 1}
    caplog.set_level(logging.WARNING, logger="django_orq_contacts")
    with frozen_broker() as broker, broker_at(celery_app, dead_broker(broker.port)):
        user, seconds = save_like_a_request("max")
        # The request came back on its own, while the broker was still frozen.
        assert broker.has_client()
    assert seconds < HANG_GUARD
    assert_left_pending(user, orq_server, caplog)
