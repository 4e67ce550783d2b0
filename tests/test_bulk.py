"""Bulk sync for big sites: keyset pagination, flat reads, and resuming after Ctrl-C."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_orq_contacts import bulk
from django_orq_contacts.models import ContactSync

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


def make_users(n, prefix="u"):
    User.objects.bulk_create([User(username=f"{prefix}{i:05d}") for i in range(n)])


def test_batches_cover_every_user_once_without_offset():
    make_users(23)
    with CaptureQueriesContext(connection) as queries:
        batches = list(bulk.iter_batches(User.objects.all(), batch_size=5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    pks = [u.pk for b in batches for u in b]
    assert pks == sorted(User.objects.values_list("pk", flat=True))
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "OFFSET" not in sql.upper()
    # Only what the default payload needs is read: never the password hash.
    assert "password" not in sql


def test_rerun_after_interrupt_resumes_where_the_work_is(orq_server, monkeypatch):
    make_users(30)
    real_batches = bulk.iter_batches

    def interrupted_after_two(queryset, batch_size):
        for i, batch in enumerate(real_batches(queryset, batch_size)):
            if i == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(bulk, "iter_batches", interrupted_after_two)
    with pytest.raises(CommandError) as excinfo:
        call_command("orq_sync_contacts", "--no-progress", "--batch-size", "10",
                     stdout=StringIO(), stderr=StringIO())
    assert excinfo.value.returncode == 130
    first_calls = len(orq_server.api_requests())
    assert first_calls == 20
    assert ContactSync.objects.filter(status="synced").count() == 20

    monkeypatch.setattr(bulk, "iter_batches", real_batches)
    orq_server.clear_requests()
    out = StringIO()
    call_command("orq_sync_contacts", "--no-progress", "--batch-size", "10", stdout=out)
    # Only the ten users the first run never reached are sent.
    assert len(orq_server.api_requests()) == 10
    assert "synced: 10, unchanged: 20" in out.getvalue()
    assert len(orq_server.contacts()) == 30


def test_a_failed_run_is_finished_by_the_next(orq_server):
    make_users(12)
    orq_server.add_fault("status", status=400, times=3, method="POST")
    with pytest.raises(CommandError):
        call_command("orq_sync_contacts", "--no-progress", "--concurrency", "1",
                     stdout=StringIO(), stderr=StringIO())
    assert ContactSync.objects.filter(status="failed").count() == 3
    orq_server.clear_requests()
    out = StringIO()
    call_command("orq_sync_contacts", "--no-progress", stdout=out)
    assert len(orq_server.api_requests()) == 3
    assert "synced: 3, unchanged: 9" in out.getvalue()
