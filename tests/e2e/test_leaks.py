"""No API key and no personal data where they do not belong.

A sync is driven through the real worker with the canary API key from tests.settings and
canary email addresses, through the paths that carry data: queued messages, a message held
unacked during a call, a retried call and a rejected one whose error bodies echo the secrets
back. Then every place an operator or attacker could read is searched: the worker's log,
this process's logs, every key and value of the broker's Redis database, ContactSync rows.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from django_orq_contacts import dispatch
from django_orq_contacts.models import ContactSync
from tests.settings import CANARY_API_KEY

from .harness import (
    queued_messages,
    redis_dump,
    row_of,
    synced_users,
    task_call,
    unacked_calls,
    wait_for,
    wait_for_row,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()
SYNC = "django_orq_contacts.sync_contact"
DELETE = "django_orq_contacts.delete_contact"
TOKEN = uuid.uuid4().hex[:10]
EMAILS = [f"canary.{TOKEN}.{n}@leak-canary.example" for n in range(5)]
SECRETS = [CANARY_API_KEY, *EMAILS]


def leaked(text: str | bytes) -> list[str]:
    blob = text if isinstance(text, bytes) else text.encode("utf-8", errors="replace")
    return [s for s in SECRETS if s.encode() in blob or s.lower().encode() in blob.lower()]


def echo_body(status: int) -> str:
    # An API that repeats the request back in its error: the key and the email included.
    return json.dumps({"error": f"rejected {EMAILS[3]} for Bearer {CANARY_API_KEY} ({status})"})


def test_key_and_emails_stay_out_of_broker_logs_and_rows(
    orq_server, e2e_worker, e2e_test_log, e2e_queue, caplog
):
    caplog.set_level(logging.DEBUG)
    broker = str(django_settings.CELERY_BROKER_URL)
    gone = User.objects.create_user("canary-gone", email=EMAILS[0], first_name="Gone")
    gone_row = wait_for_row(gone, "synced")

    # Messages at rest: with the worker stopped they stay in the queue to be read.
    e2e_worker.stop()
    try:
        ana = User.objects.create_user("canary-ana", email=EMAILS[1], first_name="Ana")
        ben = User.objects.create_user("canary-ben", email=EMAILS[2], first_name="Ben")
        ben.last_name = "Canary"
        ben.save()
        gone.delete()
        assert dispatch.flush(5)
        calls = [task_call(m) for m in queued_messages(broker, e2e_queue)]
        # Only primary keys: the users to sync (ben's two saves may travel as one) and the
        # row of the contact to delete.
        assert set(synced_users(calls)) == {str(ana.pk), str(ben.pk)}
        assert len(synced_users(calls)) <= 3
        assert [call for call in calls if call[0] == DELETE] == [(DELETE, [gone_row.pk], {})]
        assert leaked(redis_dump(broker)) == []
    finally:
        e2e_worker.start()
    wait_for_row(ana, "synced")
    wait_for_row(ben, "synced")
    wait_for(
        lambda: not ContactSync.objects.filter(pk=gone_row.pk).exists(),
        what="the delete to go through",
    )
    assert orq_server.contact(str(gone.pk)) is None

    # A message held unacked by the worker while its call is in flight.
    orq_server.add_fault("delay", seconds=1.5, times=1)
    ana.email = EMAILS[4]
    ana.save()
    wait_for(lambda: orq_server.stats()["in_flight"] >= 1, what="the worker's call to start")
    assert (SYNC, [str(ana.pk)], {}) in unacked_calls(broker)
    assert leaked(redis_dump(broker)) == []
    wait_for_row(ana, "synced")

    # A retried call and a rejected one, both answering with the secrets in their bodies.
    orq_server.add_fault("status", status=503, body=echo_body(503), times=1)
    cleo = User.objects.create_user("canary-cleo", email=EMAILS[3])
    wait_for_row(cleo, "synced", timeout=20)
    orq_server.add_fault("status", status=422, body=echo_body(422), times=1)
    cleo.first_name = "Cleo"
    cleo.save()
    failed = wait_for_row(cleo, "failed")
    assert failed.last_status_code == 422
    assert failed.last_error  # the error is recorded, just not its secrets

    # Every place the secrets could have gone.
    assert orq_server.contact(str(cleo.pk))["email"] == EMAILS[3]  # it did reach Orq
    assert leaked(e2e_worker.log_since(0)) == []
    assert leaked(caplog.text) == []
    assert leaked("\n".join(r.getMessage() for r in caplog.records)) == []
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert leaked(e2e_test_log.read_bytes()) == []
    assert leaked(redis_dump(broker)) == []
    rows = list(ContactSync.objects.values())
    assert len(rows) == 3  # ana, ben, cleo
    assert leaked(repr(rows)) == []
    assert row_of(cleo).last_status_code == 422
