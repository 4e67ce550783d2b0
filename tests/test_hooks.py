"""Hooks for projects: the sync signals and paused()."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from django_orq_contacts import signals
from django_orq_contacts.models import ContactSync
from django_orq_contacts.pausing import paused

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


@pytest.fixture
def connect():
    connected = []

    def _connect(signal, receiver):
        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))

    yield _connect
    for signal, receiver in connected:
        signal.disconnect(receiver)


def test_pre_contact_sync_can_edit_the_payload(orq_server, connect):
    def add_plan(sender, user, payload, **kwargs):
        payload["metadata"]["plan"] = "gold"
        payload["tags"].append("vip")

    connect(signals.pre_contact_sync, add_plan)
    user = User.objects.create_user("ann")
    contact = orq_server.contact(str(user.pk))
    assert contact["metadata"] == {"username": "ann", "plan": "gold"}
    assert contact["tags"] == ["vip"]


def test_pre_contact_sync_can_cancel(orq_server, connect):
    connect(signals.pre_contact_sync, lambda sender, user, payload, **kw: user.username != "bob")
    User.objects.create_user("bob")
    User.objects.create_user("cat")
    assert [c["metadata"]["username"] for c in orq_server.contacts()] == ["cat"]


def test_synced_and_failed_signals_carry_what_happened(orq_server, connect):
    seen = []
    connect(
        signals.contact_synced,
        lambda sender, user, payload, orq_id, **kw: seen.append(
            ("synced", user.username, bool(orq_id))
        ),
    )
    connect(
        signals.contact_sync_failed,
        lambda sender, user, error, will_retry, **kw: seen.append(
            ("failed", error.status, will_retry)
        ),
    )
    User.objects.create_user("dan")
    orq_server.add_fault("status", status=422)
    User.objects.create_user("eve")
    orq_server.add_fault("status", status=503)
    User.objects.create_user("fay")
    assert seen == [("synced", "dan", True), ("failed", 422, False), ("failed", 503, True)]


def test_paused_leaves_saves_pending_for_the_sweeper(orq_server):
    with paused():
        user = User.objects.create_user("gus", email="gus@example.com")
    assert orq_server.api_requests() == []
    assert ContactSync.objects.get(user=user).status == "pending"
    call_command("orq_sync_contacts", "--pending", "--no-progress", verbosity=0)
    assert orq_server.contact(str(user.pk))["email"] == "gus@example.com"


def test_paused_discard_records_nothing(orq_server):
    @paused(discard=True)
    def import_users():
        return User.objects.create_user("hal")

    user = import_users()
    assert orq_server.api_requests() == []
    assert not ContactSync.objects.filter(user=user).exists()
    # After the block, saves sync again.
    user.first_name = "Hal"
    user.save()
    assert orq_server.contact(str(user.pk))["display_name"] == "Hal"


def test_paused_is_per_thread(orq_server):
    """Another thread (another request) keeps syncing while one thread is paused."""
    started, release = threading.Event(), threading.Event()

    def paused_thread():
        with paused():
            started.set()
            release.wait(10)

    worker = threading.Thread(target=paused_thread)
    worker.start()
    started.wait(10)
    try:
        user = User.objects.create_user("ivy")
    finally:
        release.set()
        worker.join()
    assert orq_server.contact(str(user.pk)) is not None


def test_a_receiver_raising_for_one_user_of_a_batch_leaves_the_others_synced(
    settings, orq_server, connect
):
    """``sync_contacts`` (users published together) runs in this process here: the point is
    the task body carrying on past one user's exception, not the broker."""
    from django_orq_contacts import tasks

    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "AUTO_SYNC": False}
    ann, bob, cat = (User.objects.create_user(n, email=f"{n}@example.com") for n in "abc")

    def explode_for_bob(sender, user, payload, **kwargs):
        if user.username == "b":
            raise RuntimeError("a project's receiver failed")

    connect(signals.pre_contact_sync, explode_for_bob)
    outcomes = tasks.sync_contacts.apply(args=([str(ann.pk), str(bob.pk), str(cat.pk)],)).get()

    assert outcomes == {"synced": 2, "failed": 1}
    assert orq_server.contact(str(ann.pk)) is not None
    assert orq_server.contact(str(cat.pk)) is not None
    assert orq_server.contact(str(bob.pk)) is None
    row = ContactSync.objects.get(user=bob)
    assert row.status == "pending"  # left to the sweeper
    assert not row.lease_token
