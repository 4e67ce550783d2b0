"""Writes that fire no signal, and users that stop (or start again) being synced.

``orq_sync_contacts`` (default mode) and the periodic ``reconcile_contacts`` task compare
each user's payload hash with the last sync and send only the users that differ.
"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from django_orq_contacts import tasks
from django_orq_contacts.models import ContactSync
from tests.e2e.harness import wait_for, wait_for_row

from .support import assert_converged, canary_email, make_user, requests_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()


def write_behind_the_signals(users, tag: str) -> list:
    """Change three users by queryset.update, bulk_update and raw SQL; return them."""
    first, second, third = users
    User.objects.filter(pk=first.pk).update(first_name=f"Updated{tag}")
    second.email = canary_email(f"bulk{tag}")
    User.objects.bulk_update([second], ["email"])
    with connection.cursor() as cursor:
        table, pk = User._meta.db_table, User._meta.pk.column
        cursor.execute(
            f"UPDATE {table} SET last_name = %s WHERE {pk} = %s", [f"Raw{tag}", third.pk]
        )
    return [first, second, third]


def sync_command() -> None:
    call_command("orq_sync_contacts", "--no-progress", stdout=io.StringIO())


def test_writes_that_skip_signals_are_reconciled(orq_server, stack):
    users = [make_user(f"quiet{n}", first_name="Quiet") for n in range(5)]
    for user in users:
        wait_for_row(user, "synced")
    untouched = users[3:]

    # The command, run by an operator or cron.
    orq_server.clear_requests()
    changed = write_behind_the_signals(users[:3], "A")
    assert ContactSync.objects.filter(status="synced").count() == 5  # nothing noticed
    sync_command()
    assert_converged(orq_server)
    assert sorted(r.json()["external_id"] for r in orq_server.api_requests()) == sorted(
        str(u.pk) for u in changed
    )
    orq_server.clear_requests()
    sync_command()
    assert orq_server.api_requests() == []  # a second run makes no call

    # The periodic task, run by the worker (beat).
    write_behind_the_signals(users[:3], "B")
    mark = stack.worker.mark()
    tasks.reconcile_contacts.apply_async(queue=stack.queue)
    wait_for(lambda: "3" in stack.worker.outcomes(mark), what="three users to be queued")
    assert_converged(orq_server)
    assert len(orq_server.api_requests()) == 3
    for user in untouched:
        assert requests_for(orq_server, user.pk) == []
    orq_server.clear_requests()
    tasks.reconcile_contacts.apply_async(queue=stack.queue)
    wait_for(lambda: "0" in stack.worker.outcomes(mark), what="a reconcile with nothing to do")
    sync_command()
    assert orq_server.api_requests() == []


def test_user_no_longer_synced_loses_the_contact(orq_server, stack):
    # SHOULD_SYNC is tests.faults.hooks.is_active in this suite.
    rae = make_user("rae", first_name="Rae")
    wait_for_row(rae, "synced")

    rae.is_active = False
    rae.save()
    wait_for(lambda: orq_server.contact(str(rae.pk)) is None, what="the contact to be deleted")
    row = wait_for_row(rae, "synced")
    assert row.operation == "delete"
    assert_converged(orq_server)

    rae.is_active = True
    rae.save()
    wait_for(lambda: orq_server.contact(str(rae.pk)), what="the contact to come back")
    assert_converged(orq_server)
    assert [r.method for r in requests_for(orq_server, rae.pk)] == ["POST", "DELETE", "POST"]


def test_keeping_the_contact_of_excluded_users_is_configurable(orq_server, settings):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "DELETE_EXCLUDED": False, "PUBLISH": "direct"}
    sam = make_user("sam", first_name="Sam")
    contact = orq_server.contact(str(sam.pk))
    assert contact["display_name"] == "Sam"

    sam.is_active = False
    sam.first_name = "Samuel"
    sam.save()

    assert orq_server.contact(str(sam.pk)) == contact  # kept as it was, not updated
    assert [r.method for r in requests_for(orq_server, sam.pk)] == ["POST"]
    assert ContactSync.objects.get(user_id=sam.pk).status == "synced"
