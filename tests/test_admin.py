"""The admin through Django's test client: the user changelist's "Sync selected users to Orq"
action and who may use it, and the ContactSync admin with its actions."""

from __future__ import annotations

import re

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from django_orq_contacts import sync
from django_orq_contacts.models import ContactSync
from django_orq_contacts.testing.pytest_plugin import TEST_API_KEY

pytestmark = pytest.mark.django_db
User = get_user_model()
USERS_URL = "/admin/auth/user/"
ROWS_URL = "/admin/django_orq_contacts/contactsync/"
ACTION_LABEL = "Sync selected users to Orq"


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run what a request queued on commit (the test itself runs in one transaction)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def superuser():
    return User.objects.create_superuser("root", "root@example.com", None)


def staff(*codenames):
    user = User.objects.create_user(f"staff-{'-'.join(codenames) or 'none'}", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def action_names(response):
    form = response.context["action_form"]  # None when no action is offered at all
    return [] if form is None else [name for name, _ in form.fields["action"].choices]


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def run_action(client, url, action, pks):
    return client.post(
        url, {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )


# -- the user changelist action ----------------------------------------------------------------------


def test_a_superuser_syncs_selected_users(client, superuser, orq_server, commit):
    ada = User.objects.create_user("ada", email="ada@example.com")
    bob = User.objects.create_user("bob")
    User.objects.create_user("not-selected")
    client.force_login(superuser)

    changelist = client.get(USERS_URL)
    assert changelist.status_code == 200
    assert "sync_to_orq" in action_names(changelist)
    assert ACTION_LABEL in changelist.content.decode()

    with commit():
        response = run_action(client, USERS_URL, "sync_to_orq", [ada.pk, bob.pk])
    assert "2 users were queued for sync to Orq." in messages_of(response)
    assert sorted(r.json()["external_id"] for r in orq_server.api_requests("POST")) == sorted(
        [str(ada.pk), str(bob.pk)]
    )
    assert ContactSync.objects.get(user=ada).status == "synced"


def test_the_action_resends_even_unchanged_users(client, superuser, orq_server, commit):
    ada = User.objects.create_user("ada")
    assert sync.sync_user(ada.pk).outcome == "synced"
    orq_server.clear_requests()
    client.force_login(superuser)
    with commit():
        response = run_action(client, USERS_URL, "sync_to_orq", [ada.pk])
    assert "1 user was queued for sync to Orq." in messages_of(response)
    assert len(orq_server.api_requests("POST")) == 1


def test_staff_who_can_change_users_get_the_action(client):
    client.force_login(staff("view_user", "change_user"))
    assert "sync_to_orq" in action_names(client.get(USERS_URL))


@pytest.mark.parametrize("codenames", [("view_user",), ("view_user", "delete_user")])
def test_staff_who_cannot_change_users_do_not_get_the_action(client, orq_server, commit, codenames):
    # With delete_user the changelist has an action form (delete_selected), so the forged
    # POST reaches the action dispatch and must be turned down there.
    viewer = staff(*codenames)
    ada = User.objects.create_user("ada")
    client.force_login(viewer)
    response = client.get(USERS_URL)
    assert response.status_code == 200
    assert "sync_to_orq" not in action_names(response)
    assert ACTION_LABEL not in response.content.decode()

    before = list(ContactSync.objects.values("pk", "version", "status"))
    with commit():
        forged = run_action(client, USERS_URL, "sync_to_orq", [ada.pk])
    assert not any("queued" in m for m in messages_of(forged))
    assert orq_server.requests == []
    assert list(ContactSync.objects.values("pk", "version", "status")) == before


def test_staff_without_any_user_permission_cannot_reach_the_changelist(client, orq_server):
    ada = User.objects.create_user("ada")
    client.force_login(staff())
    response = client.post(USERS_URL, {"action": "sync_to_orq", "_selected_action": [ada.pk]})
    assert response.status_code == 403
    assert orq_server.requests == []


# -- the ContactSync admin ---------------------------------------------------------------------------


def make_rows():
    ok = User.objects.create_user("ok-user")
    bad = User.objects.create_user("bad-user")
    ContactSync.objects.filter(user=ok).update(
        status="synced", synced_version=1, last_synced_at=timezone.now()
    )
    ContactSync.objects.filter(user=bad).update(
        status="failed",
        attempts=1,
        last_status_code=422,
        last_error="OrqPermanentError: email is not valid",
        next_attempt_at=None,
    )
    return ContactSync.objects.get(user=ok), ContactSync.objects.get(user=bad)


def test_contactsync_changelist_lists_rows_and_filters_by_status(client, superuser):
    ok, bad = make_rows()
    client.force_login(superuser)
    page = client.get(ROWS_URL)
    assert page.status_code == 200
    shown = {row.pk for row in page.context["cl"].result_list}
    assert {ok.pk, bad.pk} <= shown
    html = page.content.decode()
    assert "email is not valid" in html
    assert set(action_names(page)) >= {"resync", "mark_pending"}

    failed = client.get(ROWS_URL, {"status__exact": "failed"})
    assert [row.pk for row in failed.context["cl"].result_list] == [bad.pk]


def test_contactsync_rows_are_read_only_and_never_added_by_hand(client, superuser):
    ok, _ = make_rows()
    client.force_login(superuser)
    detail = client.get(f"{ROWS_URL}{ok.pk}/change/")
    assert detail.status_code == 200
    assert "ok-user" in detail.content.decode()
    assert client.get(f"{ROWS_URL}add/").status_code == 403


def test_admin_pages_never_show_the_api_key(client, superuser, orq_server):
    orq_server.add_fault("status", status=500, body=f"echo Bearer {TEST_API_KEY}")
    ada = User.objects.create_user("ada")
    sync.sync_user(ada.pk)
    row = ContactSync.objects.get(user=ada)
    assert row.last_status_code == 500
    client.force_login(superuser)
    pages = [
        client.get(ROWS_URL),
        client.get(f"{ROWS_URL}{row.pk}/change/"),
        client.get(USERS_URL),
        client.get(f"{USERS_URL}{ada.pk}/change/"),
    ]
    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert TEST_API_KEY not in html
        assert django_settings.CANARY_API_KEY not in html


def test_contactsync_resync_action_sends_the_selected_users(client, superuser, orq_server, commit):
    ok, bad = make_rows()
    client.force_login(superuser)
    with commit():
        response = run_action(client, ROWS_URL, "resync", [ok.pk, bad.pk])
    assert any(re.search(r"\b2 \w+ were queued for sync", m) for m in messages_of(response))
    assert sorted(r.json()["metadata"]["username"] for r in orq_server.api_requests("POST")) == [
        "bad-user",
        "ok-user",
    ]
    assert {row.status for row in ContactSync.objects.filter(pk__in=[ok.pk, bad.pk])} == {"synced"}


def test_contactsync_mark_pending_action_makes_rows_due_now(client, superuser, orq_server):
    ok, bad = make_rows()
    client.force_login(superuser)
    response = run_action(client, ROWS_URL, "mark_pending", [ok.pk, bad.pk])
    assert "2 rows marked pending." in messages_of(response)
    for row in ContactSync.objects.filter(pk__in=[ok.pk, bad.pk]):
        assert row.status == "pending"
        assert row.attempts == 0
        assert row.next_attempt_at <= timezone.now()
    assert orq_server.requests == []  # the sweeper does the work


def test_contactsync_actions_need_the_change_permission(client, orq_server, commit):
    ok, _ = make_rows()
    client.force_login(staff("view_contactsync"))
    page = client.get(ROWS_URL)
    assert page.status_code == 200
    assert not {"resync", "mark_pending"} & set(action_names(page))
    with commit():
        run_action(client, ROWS_URL, "mark_pending", [ok.pk])
    assert ContactSync.objects.get(pk=ok.pk).status == "synced"
    assert orq_server.requests == []
