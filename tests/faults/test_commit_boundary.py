"""Faults at the commit boundary: rolled-back work, and a process dying after its commit."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from django_orq_contacts.models import ContactSync
from tests.e2e.harness import wait_for, wait_for_row

from .child import DIED_AFTER_COMMIT
from .support import SYNC, assert_converged, canary_email, make_user, requests_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.django_db(transaction=True)]
User = get_user_model()


def test_rollback_and_savepoint_rollback_send_nothing(orq_server, stack):
    bea = make_user("bea", first_name="Bea")
    wait_for_row(bea, "synced")
    synced_version = ContactSync.objects.get(user_id=bea.pk).version
    mark = stack.worker.mark()

    with pytest.raises(RuntimeError), transaction.atomic():
        bea.first_name = "Changed"
        bea.save()
        ghost = make_user("ghost")
        raise RuntimeError("the request failed")

    with transaction.atomic():
        kept = make_user("kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            dropped = make_user("dropped")
            bea.first_name = "Changed again"
            bea.save()
            raise RuntimeError("the inner block failed")

    bea.refresh_from_db()
    assert bea.first_name == "Bea"
    assert not User.objects.filter(pk__in=[ghost.pk, dropped.pk]).exists()
    assert_converged(orq_server)
    # Only the kept user's task ran; nothing was sent for the rolled-back saves.
    assert [e.name for e in stack.worker.received(mark)] == [SYNC]
    assert requests_for(orq_server, ghost.pk) == requests_for(orq_server, dropped.pk) == []
    assert len(requests_for(orq_server, bea.pk)) == 1  # its creation, before the rollbacks
    assert ContactSync.objects.get(user_id=bea.pk).version == synced_version
    assert len(requests_for(orq_server, kept.pk)) == 1


def test_process_dying_between_commit_and_publish_is_swept(orq_server, stack, children):
    ada = make_user("ada", first_name="Ada")
    wait_for_row(ada, "synced")
    orq_server.clear_requests()
    mark = stack.worker.mark()

    died = children.run("die-after-commit", "cleo", canary_email("cleo"), str(ada.pk), "Augusta")

    assert died.returncode == DIED_AFTER_COMMIT, died.stderr[-3000:]
    cleo = User.objects.get(username="cleo")
    ada.refresh_from_db()
    assert ada.first_name == "Augusta"  # the commit happened
    assert set(ContactSync.objects.values_list("status", flat=True)) == {"pending"}
    assert stack.worker.received(mark) == []  # and nothing was published
    assert orq_server.api_requests() == []

    stack.sweep()
    assert_converged(orq_server)
    assert len(requests_for(orq_server, cleo.pk)) == 1
    assert len(requests_for(orq_server, ada.pk)) == 1
    assert wait_for(lambda: stack.worker.outcomes(mark), what="the sweeper to finish") == ["2"]
