"""Races: two processes saving one user, and a user deleted around its sync."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from django_orq_contacts import dispatch, pausing, tasks
from django_orq_contacts.models import ContactSync
from tests.e2e.harness import wait_for, wait_for_row

from .support import assert_converged, make_user, requests_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()
SAVES = 8


def test_concurrent_saves_from_two_processes_end_in_the_latest_state(orq_server, stack, children):
    orq_server.configure(latency=0.02, jitter=0.3)  # calls finish out of order
    nia = make_user("nia", first_name="Nia")
    wait_for_row(nia, "synced")

    children.together(
        ("saves", str(nia.pk), str(SAVES), "web", "1"),
        ("saves", str(nia.pk), str(SAVES), "cron", "2"),
    )

    # Whichever save committed last is the state Orq must end with.
    assert_converged(orq_server, timeout=30)
    nia.refresh_from_db()
    assert nia.first_name in {f"web{SAVES - 1}", f"cron{SAVES - 1}"}
    assert orq_server.contact(str(nia.pk))["display_name"] == nia.get_full_name()
    row = ContactSync.objects.get(user_id=nia.pk)
    assert row.synced_version == row.version


def test_user_deleted_before_its_task_runs(orq_server, stack):
    ola = make_user("ola", first_name="Ola")
    wait_for_row(ola, "synced")
    with pausing.paused():  # saved; the task is still on its way
        ola.first_name = "Changed"
        ola.save()
        new = make_user("newcomer")
    pks = [str(ola.pk), str(new.pk)]
    ola.delete()
    new.delete()
    assert dispatch.flush(10)
    mark = stack.worker.mark()

    # The late tasks arrive after the deletions.
    for pk in pks:
        tasks.sync_contact.apply_async(args=[pk], queue=stack.queue)

    wait_for(lambda: stack.worker.outcomes(mark).count("gone") == 2, what="the late tasks")
    assert orq_server.contact(pks[0]) is None  # deleted by the delete task, not recreated
    assert requests_for(orq_server, pks[1]) == []  # never sent anything
    wait_for(lambda: not ContactSync.objects.exists(), what="the tombstone to go")
    assert_converged(orq_server)


@pytest.mark.parametrize("synced_before", [True, False], ids=["update", "create"])
def test_user_deleted_while_its_sync_is_in_flight(orq_server, stack, synced_before):
    if synced_before:
        pia = make_user("pia", first_name="Pia")
        wait_for_row(pia, "synced")
        orq_server.add_fault("delay", seconds=1.0, times=1)
        pia.first_name = "Changed"
        pia.save()
    else:
        orq_server.add_fault("delay", seconds=1.0, times=1)
        pia = make_user("pia", first_name="Pia")
    external_id = str(pia.pk)
    wait_for(lambda: orq_server.stats()["in_flight"] >= 1, what="the call to be in flight")

    pia.delete()

    # The call in flight lands after the delete; the contact must still go in the end.
    stack.sweep_until(
        lambda: orq_server.stats()["in_flight"] == 0 and not ContactSync.objects.exists(),
        what="the deleted user's row to be done with",
    )
    assert_converged(orq_server)
    assert orq_server.contact(external_id) is None
