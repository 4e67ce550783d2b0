"""The bulk command records successes a batch at a time (``batchwrite``); each outcome must
leave a row exactly as ``state.record_success`` leaves it for a single sync."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from django_orq_contacts import state
from django_orq_contacts.backends import UpsertResult
from django_orq_contacts.batchwrite import record_successes
from django_orq_contacts.models import ContactSync

User = get_user_model()
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def manual(settings):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "AUTO_SYNC": False}


def claimed(username, **row_fields):
    user = User.objects.create_user(username)
    state.mark_dirty(user.pk, created=True)
    ContactSync.objects.filter(user=user).update(**row_fields)
    row, token = state.claim(ContactSync.objects.get(user=user).pk)
    return user, row, token


def settled(row_pk):
    """What a user of the admin would see of the row, minus its identity and clock times."""
    row = ContactSync.objects.get(pk=row_pk)
    return {
        "status": row.status,
        "operation": row.operation,
        "version": row.version,
        "synced_version": row.synced_version,
        "payload_hash": row.payload_hash,
        "orq_id": row.orq_id,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "last_status_code": row.last_status_code,
        "due": row.next_attempt_at is not None,
        "leased": bool(row.lease_token) or row.lease_until is not None,
        "synced_at": row.last_synced_at is not None,
    }


def both_ways(before_record=None, answer_id="orq-1", **row_fields):
    """Record one success with each writer on two identical rows; return both outcomes."""
    single = claimed("single", **row_fields)
    batch = claimed("batch", **row_fields)
    for _, row, _ in (single, batch):
        if before_record:
            before_record(row)
    _, row, token = single
    newer_single = not state.record_success(
        row, token, version=row.version, payload_hash="h" * 64, orq_id=answer_id
    )
    user, row, token = batch
    entry = (user, row, token, {}, "h" * 64, UpsertResult(orq_id=answer_id))
    newer_batch = row.pk in record_successes([entry])
    return (settled(single[1].pk), newer_single), (settled(row.pk), newer_batch)


def test_a_plain_success():
    single, batch = both_ways(attempts=3, last_error="503 earlier", last_status_code=503)
    assert single == batch
    assert single[0]["status"] == "synced"
    assert single[0]["due"] is False
    assert single[0]["leased"] is False


def test_a_save_during_the_call_leaves_the_row_pending_and_due():
    single, batch = both_ways(before_record=lambda row: state.mark_dirty(row.user_id))
    assert single == batch
    assert single[0]["status"] == "pending"
    assert single[0]["due"] is True
    assert single[1] is True  # both report the newer save


def test_a_user_deleted_during_the_call_keeps_its_pending_delete():
    def delete_in_flight(row):
        ContactSync.objects.filter(pk=row.pk).update(user=None, operation="delete")

    single, batch = both_ways(before_record=delete_in_flight)
    assert single == batch
    assert single[0]["operation"] == "delete"


def test_a_lost_lease_records_nothing():
    def taken_over(row):
        ContactSync.objects.filter(pk=row.pk).update(lease_token="someone-else")

    single, batch = both_ways(before_record=taken_over)
    assert single == batch
    assert single[0]["status"] == "pending"
    assert single[0]["payload_hash"] == ""


def test_an_answer_without_an_id_keeps_the_known_one():
    single, batch = both_ways(answer_id="", orq_id="kept")
    assert single == batch
    assert single[0]["orq_id"] == "kept"
