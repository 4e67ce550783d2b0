"""The whole flow with a custom user model: UUID pk, email as the username, no first/last name.

Runs only under ``--ds=tests.settings_custom_user`` (see tests/test_custom_user.py).
"""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from django_orq_contacts import payload
from django_orq_contacts.models import ContactSync

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


def test_the_custom_model_is_in_use():
    assert User._meta.label == "custom_user.EmailUser"
    assert isinstance(User._meta.pk.default(), uuid.UUID)


def test_default_contact_uses_uuid_and_email_as_username():
    user = User(email="grace@example.com")
    body = payload.build(user)
    assert body == {
        "external_id": str(user.pk),
        "display_name": "grace@example.com",
        "email": "grace@example.com",
        "avatar_url": None,
        "tags": [],
        "metadata": {"username": "grace@example.com"},
    }


def test_create_update_delete_mirror_the_user(orq_server):
    user = User.objects.create_user("grace@example.com", password="s3cret-pw")
    contact = orq_server.contact(str(user.pk))
    assert contact is not None
    assert contact["email"] == "grace@example.com"
    assert contact["display_name"] == "grace@example.com"
    row = ContactSync.objects.get(user=user)
    assert (row.status, row.external_id) == ("synced", str(user.pk))
    assert b"s3cret" not in orq_server.requests[0].body

    user.email = "grace.hopper@example.com"
    user.save()
    assert orq_server.contact(str(user.pk))["email"] == "grace.hopper@example.com"
    assert len(orq_server.contacts()) == 1

    user.delete()
    assert orq_server.contacts() == []
    assert not ContactSync.objects.exists()


def test_command_syncs_bulk_created_users_and_skips_them_after(orq_server):
    users = User.objects.bulk_create(
        [User(email=f"user{i}@example.com", password="!") for i in range(3)]
    )
    out = StringIO()
    call_command("orq_sync_contacts", "--no-progress", stdout=out)
    assert "synced: 3" in out.getvalue()
    assert {c["external_id"] for c in orq_server.contacts()} == {str(u.pk) for u in users}

    orq_server.clear_requests()
    out = StringIO()
    call_command("orq_sync_contacts", "--no-progress", "--user", str(users[0].pk), stdout=out)
    assert "unchanged: 1" in out.getvalue()
    assert orq_server.requests == []


def test_admin_action_is_attached_to_the_custom_user_admin(client, orq_server):
    admin_user = User.objects.create_superuser("admin@example.com", password="pw")
    other = User.objects.create_user("other@example.com")
    orq_server.clear_requests()
    client.force_login(admin_user)
    response = client.post(
        "/admin/custom_user/emailuser/",
        {"action": "sync_to_orq", "_selected_action": [str(other.pk)]},
        follow=True,
    )
    assert "1 user was queued for sync to Orq." in response.content.decode()
    assert [r.json()["external_id"] for r in orq_server.api_requests("POST")] == [str(other.pk)]


def test_migrations_are_complete_for_a_custom_user_model():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
