"""The core promise, end to end: user saves in this process, a real worker, the fake Orq server.

Every check is what a site owner would see: the contact in Orq, the requests Orq received,
the ContactSync row, and which tasks the worker ran.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from django_orq_contacts import sync
from django_orq_contacts.models import ContactSync

from .harness import row_of, wait_for, wait_for_row

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()
SYNC = "django_orq_contacts.sync_contact"
SYNC_MANY = "django_orq_contacts.sync_contacts"


def requests_for(server, user):
    """The API requests that concern this user's contact (by path or body external id)."""
    external_id = str(user.pk)
    found = []
    for request in server.api_requests():
        in_path = request.path.split("?")[0].rstrip("/").endswith(f"/{external_id}")
        in_body = bool(request.body) and request.json().get("external_id") == external_id
        if in_path or in_body:
            found.append(request)
    return found


def contact_where(server, user, **expected):
    """Wait until the user's contact exists with these field values; return it."""

    def matches():
        contact = server.contact(str(user.pk))
        if contact is None or any(contact[k] != v for k, v in expected.items()):
            return None
        return contact

    return wait_for(matches, what=f"user {user.pk}'s contact with {expected}")


def test_create_update_delete_mirror_the_user(orq_server):
    user = User.objects.create_user(
        "ada", email="ada@example.com", first_name="Ada", last_name="Lovelace"
    )
    contact = contact_where(orq_server, user, email="ada@example.com")
    assert contact["display_name"] == "Ada Lovelace"
    assert contact["metadata"] == {"username": "ada"}
    assert contact["tags"] == []
    row = wait_for_row(user, "synced")
    assert row.orq_id == contact["_id"]
    assert row.external_id == str(user.pk)
    assert row.attempts == 0
    assert row.last_error == ""
    assert row.payload_hash
    assert row.last_synced_at is not None
    first_sync = row.last_synced_at

    user.first_name = "Augusta"
    user.email = "augusta@example.com"
    user.save()
    contact = contact_where(orq_server, user, display_name="Augusta Lovelace")
    assert contact["email"] == "augusta@example.com"
    row = wait_for_row(user, "synced")
    assert row.last_synced_at > first_sync

    # An emptied email is cleared in Orq, not left stale.
    user.email = ""
    user.save()
    contact_where(orq_server, user, email=None)
    assert len(orq_server.contacts()) == 1

    row_pk = wait_for_row(user, "synced").pk
    external_id = str(user.pk)
    user.delete()
    wait_for(lambda: orq_server.contact(external_id) is None, what="the contact to be deleted")
    wait_for(
        lambda: not ContactSync.objects.filter(pk=row_pk).exists(),
        what="the ContactSync tombstone to be removed",
    )
    assert orq_server.contacts() == []


def test_rolled_back_transaction_sends_nothing(orq_server, e2e_worker, settle):
    bea = User.objects.create_user("bea", first_name="Bea")
    synced = wait_for_row(bea, "synced")
    orq_server.clear_requests()
    mark = e2e_worker.mark()

    with pytest.raises(RuntimeError), transaction.atomic():
        bea.first_name = "Changed"
        bea.save()
        ghost = User.objects.create_user("ghost", email="ghost@example.com")
        raise RuntimeError("the request failed")

    settle()
    assert [e.name for e in e2e_worker.received(mark)] == [SYNC]  # the sentinel's only
    assert requests_for(orq_server, bea) == []
    assert requests_for(orq_server, ghost) == []
    assert orq_server.contact(str(bea.pk))["display_name"] == "Bea"
    after = row_of(bea)
    assert (after.status, after.version) == ("synced", synced.version)
    assert not ContactSync.objects.filter(user_id=ghost.pk).exists()


def test_savepoint_rollback_sends_nothing_for_that_user(orq_server, e2e_worker, settle):
    bea = User.objects.create_user("bea", first_name="Bea")
    wait_for_row(bea, "synced")
    orq_server.clear_requests()
    mark = e2e_worker.mark()

    with transaction.atomic():
        kept = User.objects.create_user("kept", email="kept@example.com")
        with pytest.raises(RuntimeError), transaction.atomic():
            dropped = User.objects.create_user("dropped", email="dropped@example.com")
            bea.first_name = "Changed"
            bea.save()
            raise RuntimeError("inner block fails")

    contact_where(orq_server, kept, email="kept@example.com")
    settle()
    # One task for the kept user, one for the sentinel: none for the rolled-back saves.
    assert [e.name for e in e2e_worker.received(mark)] == [SYNC, SYNC]
    assert requests_for(orq_server, dropped) == []
    assert requests_for(orq_server, bea) == []
    assert orq_server.contact(str(bea.pk))["display_name"] == "Bea"
    assert row_of(bea).status == "synced"


def test_many_saves_in_one_transaction_make_one_task_and_one_call(orq_server, e2e_worker, settle):
    mark = e2e_worker.mark()
    with transaction.atomic():
        carol = User.objects.create_user("carol", email="carol@example.com")
        for i in range(5):
            carol.first_name = f"Carol{i}"
            carol.save()

    contact_where(orq_server, carol, display_name="Carol4")
    settle()
    assert [e.name for e in e2e_worker.received(mark)] == [SYNC, SYNC]  # carol + sentinel
    calls = requests_for(orq_server, carol)
    assert len(calls) == 1
    assert json.loads(calls[0].body)["display_name"] == "Carol4"
    assert wait_for_row(carol, "synced").attempts == 0


def test_login_save_enqueues_nothing_and_unchanged_save_makes_no_call(
    orq_server, e2e_worker, settle
):
    dan = User.objects.create_user("dan", email="dan@example.com")
    before = wait_for_row(dan, "synced")
    orq_server.clear_requests()
    mark = e2e_worker.mark()

    dan.last_login = timezone.now()
    dan.save(update_fields=["last_login"])
    settle()
    assert [e.name for e in e2e_worker.received(mark)] == [SYNC]  # the sentinel's only
    assert requests_for(orq_server, dan) == []
    after = row_of(dan)
    assert (after.version, after.status, after.updated_at) == (
        before.version,
        "synced",
        before.updated_at,
    )

    # A full save with nothing changed runs the task, which finds the same hash.
    mark = e2e_worker.mark()
    dan.save()
    wait_for(lambda: "unchanged" in e2e_worker.outcomes(mark), what="an 'unchanged' outcome")
    assert requests_for(orq_server, dan) == []
    after = wait_for_row(dan, "synced")
    assert after.last_synced_at == before.last_synced_at
    assert after.payload_hash == before.payload_hash


def test_server_errors_are_retried_until_the_contact_converges(orq_server, e2e_worker):
    orq_server.add_fault("status", status=503, times=3, path_contains="/v2/contacts")
    mark = e2e_worker.mark()
    erin = User.objects.create_user("erin", email="erin@example.com")

    row = wait_for_row(erin, "synced", timeout=30)
    assert (row.attempts, row.last_error, row.last_status_code) == (0, "", None)
    assert [r.status for r in requests_for(orq_server, erin)] == [503, 503, 503, 200]
    assert orq_server.contact(str(erin.pk))["email"] == "erin@example.com"
    assert len(orq_server.contacts()) == 1
    assert sum(e.kind == "retry" for e in e2e_worker.events(mark)) == 3


def test_rate_limited_call_waits_for_retry_after(orq_server):
    orq_server.add_fault("status", status=429, headers={"Retry-After": "1"}, times=1)
    fay = User.objects.create_user("fay", email="fay@example.com")

    wait_for_row(fay, "synced", timeout=30)
    refused, accepted = requests_for(orq_server, fay)
    assert (refused.status, accepted.status) == (429, 200)
    # The retry came no earlier than the server asked (arrival times on the server's clock).
    assert accepted.time - refused.time >= 0.95


def test_rejected_payload_fails_once_with_a_redacted_error(orq_server, e2e_worker):
    orq_server.add_fault(
        "status",
        status=422,
        body=json.dumps({"error": "email gus@example.com is not allowed"}),
        times=1,
    )
    mark = e2e_worker.mark()
    gus = User.objects.create_user("gus", email="gus@example.com")

    row = wait_for_row(gus, "failed")
    wait_for(lambda: "failed" in e2e_worker.outcomes(mark), what="the task to finish as failed")
    assert row.last_status_code == 422
    assert "422" in row.last_error
    assert "gus@example.com" not in row.last_error
    assert len(requests_for(orq_server, gus)) == 1
    assert not any(e.kind == "retry" for e in e2e_worker.events(mark))
    assert orq_server.contact(str(gus.pk)) is None


def test_rejected_key_fails_and_alerts(orq_server, e2e_worker):
    orq_server.add_fault("status", status=401, times=1)
    mark = e2e_worker.mark()
    hal = User.objects.create_user("hal", email="hal@example.com")

    row = wait_for_row(hal, "failed")
    wait_for(lambda: "failed" in e2e_worker.outcomes(mark), what="the task to finish as failed")
    assert row.last_status_code == 401
    assert len(requests_for(orq_server, hal)) == 1
    assert "Orq rejected the API key" in e2e_worker.log_since(mark)


def test_a_burst_of_saves_goes_out_in_few_messages_and_one_call_per_user(
    orq_server, e2e_worker, settle
):
    """An admin action (or a script) marking many users at once: the publisher thread sends
    them as ``sync_contacts`` messages, and a 503 for one user retries that user alone."""
    users = [
        User.objects.create_user(f"burst{i}", email=f"burst{i}@example.com") for i in range(40)
    ]
    for user in users:
        wait_for_row(user, "synced")
    orq_server.clear_requests()
    User.objects.filter(pk__in=[u.pk for u in users]).update(first_name="Burst")
    orq_server.add_fault("status", status=503, times=1, path_contains="/v2/contacts")
    mark = e2e_worker.mark()

    sync.request_sync([u.pk for u in users])

    for user in users:
        contact_where(orq_server, user, display_name="Burst")
        assert wait_for_row(user, "synced").attempts == 0
    settle()
    received = [e.name for e in e2e_worker.received(mark)]
    assert SYNC_MANY in received
    assert len(received) < len(users)
    calls = [requests_for(orq_server, user) for user in users]
    # One call per user, plus the one that met the 503 and went round again on its own.
    assert sorted(len(c) for c in calls) == [1] * 39 + [2]
    assert sorted(r.status for c in calls for r in c).count(503) == 1
