"""The admin's Orq parts: status column and filter, the contact's state, "Sync now", actions."""

import re

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_orq_contacts import admin_actions, signals
from django_orq_contacts.admin_actions import OrqUserAdminMixin, attach_to_user_admin, sync_to_orq
from django_orq_contacts.models import ContactSync
from django_orq_contacts.pausing import paused

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()
CHANGELIST = reverse("admin:auth_user_changelist")


def change_url(user):
    return reverse("admin:auth_user_change", args=[user.pk])


def contactsync_action(client, action, row_pks):
    return client.post(
        reverse("admin:django_orq_contacts_contactsync_changelist"),
        {"action": action, "_selected_action": list(row_pks)},
        follow=True,
    )


def sync_now_url(user):
    return reverse("admin:auth_user_orq_sync", args=[user.pk])


def status_cells(html):
    """{username: text of the Orq sync column} from a user changelist page."""
    cells = {}
    for row in re.findall(r"<tr>.*?</tr>", html, re.S):
        name = re.search(r'class="field-username"><a [^>]*>([^<]+)</a>', row)
        status = re.search(r'class="field-orq_sync_status">([^<]*)<', row)
        if name and status:
            cells[name.group(1)] = status.group(1)
    return cells


@pytest.fixture
def four_states(orq_server):
    """Users whose contacts are synced, pending, failed and never recorded."""
    synced = User.objects.create_user("synced", email="s@example.com")
    with paused():
        pending = User.objects.create_user("pending")
    orq_server.add_fault("status", status=400, body='{"error": "bad email"}')
    failed = User.objects.create_user("failed")
    # bulk_create sends no signals: like users that existed before the app was installed.
    (never,) = User.objects.bulk_create([User(username="never")])
    return {"synced": synced, "pending": pending, "failed": failed, "never": never}


def test_changelist_shows_each_users_sync_status(admin_client, four_states):
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    cells = status_cells(response.content.decode())
    assert cells["synced"] == "synced"
    assert cells["pending"] == "pending"
    assert cells["failed"] == "failed"
    assert cells["never"] == "never"
    assert cells["admin"] == "synced"  # the admin user itself was synced when created


@pytest.mark.parametrize("status", ["synced", "pending", "failed", "never"])
def test_status_filter_lists_only_users_in_that_state(admin_client, four_states, status):
    response = admin_client.get(CHANGELIST, {"orq_sync": status})
    assert response.status_code == 200
    shown = set(status_cells(response.content.decode()))
    expected = {status} | ({"admin"} if status == "synced" else set())
    assert shown == expected


def test_filter_offers_the_states(admin_client, four_states):
    html = admin_client.get(CHANGELIST).content.decode()
    assert "Orq sync status" in html
    for status in ("synced", "pending", "failed", "never"):
        assert f"?orq_sync={status}" in html


def test_excluded_users_are_not_shown_as_synced(admin_client, orq_server, settings):
    settings.ORQ_CONTACTS = {
        **settings.ORQ_CONTACTS,
        "SHOULD_SYNC": "tests.test_admin_polish.no_bots",
    }
    bot = User.objects.create_user("bot-1")
    assert orq_server.contact(str(bot.pk)) is None
    cells = status_cells(admin_client.get(CHANGELIST).content.decode())
    assert cells["bot-1"] == "excluded"
    synced = status_cells(admin_client.get(CHANGELIST, {"orq_sync": "synced"}).content.decode())
    assert "bot-1" not in synced


def no_bots(user):
    return not user.username.startswith("bot-")


def changelist_queries(client):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST)
    assert response.status_code == 200
    return len(queries)


def test_changelist_query_count_does_not_grow_with_users(admin_client, orq_server):
    User.objects.bulk_create([User(username=f"a{i}") for i in range(3)])
    few = changelist_queries(admin_client)
    User.objects.bulk_create([User(username=f"b{i}") for i in range(40)])
    for user in User.objects.filter(username__startswith="b")[:20]:
        user.save()  # gives these users a ContactSync row, so the column has both kinds
    many = changelist_queries(admin_client)
    assert many == few
    assert many <= 12


def test_change_page_shows_the_contacts_state_and_a_sync_now_button(admin_client, orq_server):
    user = User.objects.create_user("ada", email="ada@example.com")
    row = ContactSync.objects.get(user=user)
    html = admin_client.get(change_url(user)).content.decode()
    assert "Orq contact" in html
    assert row.orq_id
    assert row.orq_id in html
    assert "synced" in html
    assert re.search(rf'<form method="post" action="{re.escape(sync_now_url(user))}"', html)
    assert "Sync now" in html
    # The button's form sits outside the change form: Enter in a field still saves.
    change_form_start = html.index('id="user_form"')
    assert html.index(sync_now_url(user)) < change_form_start


def test_change_page_of_a_never_synced_user(admin_client):
    (user,) = User.objects.bulk_create([User(username="old")])
    html = admin_client.get(change_url(user)).content.decode()
    assert "Never sent to Orq." in html


def test_add_page_still_works(admin_client):
    response = admin_client.get(reverse("admin:auth_user_add"))
    assert response.status_code == 200
    assert "Sync now" not in response.content.decode()


def test_change_page_shows_the_last_error(admin_client, orq_server):
    orq_server.add_fault("status", status=400, body='{"error": "display_name is not valid"}')
    user = User.objects.create_user("bea")
    html = admin_client.get(change_url(user)).content.decode()
    assert "failed" in html
    assert "display_name is not valid" in html


def test_sync_now_sends_the_user_and_redirects_back(admin_client, orq_server):
    with paused():
        user = User.objects.create_user("cleo", email="cleo@example.com")
    assert orq_server.contact(str(user.pk)) is None
    response = admin_client.post(sync_now_url(user), follow=True)
    assert response.redirect_chain == [(change_url(user), 302)]
    assert orq_server.contact(str(user.pk))["email"] == "cleo@example.com"
    assert ContactSync.objects.get(user=user).status == "synced"
    html = response.content.decode()
    assert "Cleo was queued for sync to Orq." in html


def test_sync_now_is_forced_even_when_nothing_changed(admin_client, orq_server):
    user = User.objects.create_user("dan")
    orq_server.clear_requests()
    admin_client.post(sync_now_url(user))
    assert len(orq_server.api_requests()) == 1


def test_sync_now_refuses_get(admin_client, orq_server):
    user = User.objects.create_user("eve")
    orq_server.clear_requests()
    assert admin_client.get(sync_now_url(user)).status_code == 405
    assert orq_server.api_requests() == []


def test_sync_now_needs_a_csrf_token(admin_user, orq_server):
    user = User.objects.create_user("fay")
    orq_server.clear_requests()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(sync_now_url(user)).status_code == 403
    assert orq_server.api_requests() == []
    # The token from the change page is accepted.
    html = client.get(change_url(user)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert client.post(sync_now_url(user), {"csrfmiddlewaretoken": token}).status_code == 302
    assert len(orq_server.api_requests()) == 1


def test_sync_now_needs_change_permission(client, orq_server):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_user"))
    user = User.objects.create_user("gus")
    orq_server.clear_requests()
    client.force_login(viewer)
    html = client.get(change_url(user)).content.decode()
    assert "Sync now" not in html
    assert client.post(sync_now_url(user)).status_code == 403
    assert orq_server.api_requests() == []


def test_sync_now_for_a_missing_user_is_404(admin_client):
    assert admin_client.post(reverse("admin:auth_user_orq_sync", args=[987654])).status_code == 404


def test_sync_selected_users_action(admin_client, orq_server):
    with paused():
        users = [User.objects.create_user(f"h{i}") for i in range(3)]
    response = admin_client.post(
        CHANGELIST,
        {"action": "sync_to_orq", "_selected_action": [u.pk for u in users]},
        follow=True,
    )
    assert "3 users were queued for sync to Orq." in response.content.decode()
    for user in users:
        assert orq_server.contact(str(user.pk)) is not None
    assert set(ContactSync.objects.filter(user__in=users).values_list("status", flat=True)) == {
        "synced"
    }


def test_action_needs_change_permission(client, orq_server):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_user"))
    client.force_login(viewer)
    html = client.get(CHANGELIST).content.decode()
    assert "Sync selected users to Orq" not in html


def test_large_selection_is_enqueued_in_chunks(admin_client, orq_outbox, monkeypatch):
    # The real chunk is 500; a small one keeps the test quick and shows the same thing.
    monkeypatch.setattr(admin_actions, "ENQUEUE_CHUNK", 10)
    User.objects.bulk_create([User(username=f"bulk{i:02d}") for i in range(25)])
    rows_at_each_sync = []

    def record(sender, **kwargs):
        rows_at_each_sync.append(
            ContactSync.objects.filter(user__username__startswith="bulk").count()
        )

    signals.contact_synced.connect(record)
    try:
        response = admin_client.post(
            CHANGELIST,
            {
                "action": "sync_to_orq",
                "select_across": "1",
                "index": "0",
                "_selected_action": [User.objects.get(username="bulk00").pk],
            },
            follow=True,
        )
    finally:
        signals.contact_synced.disconnect(record)
    assert "26 users were queued for sync to Orq." in response.content.decode()
    assert ContactSync.objects.filter(status="synced").count() == 26
    # Each chunk was committed and sent before the next was even marked.
    assert rows_at_each_sync[0] <= 10
    assert rows_at_each_sync[-1] == 25


def test_contactsync_resync_redoes_failed_deletes_across_chunks(
    admin_client, orq_server, monkeypatch
):
    monkeypatch.setattr(admin_actions, "ENQUEUE_CHUNK", 2)
    users = [User.objects.create_user(f"del{i}") for i in range(5)]
    external_ids = [str(u.pk) for u in users]
    # A permanent failure: the tombstones stay "failed" until an operator acts.
    orq_server.add_fault("status", status=400, body='{"error": "nope"}', times=5)
    for user in users:
        user.delete()
    orq_server.clear_faults()
    rows = ContactSync.objects.filter(external_id__in=external_ids)
    assert set(rows.values_list("status", flat=True)) == {"failed"}
    response = contactsync_action(admin_client, "resync", rows.values_list("pk", flat=True))
    assert "5 rows were queued for sync." in response.content.decode()
    assert all(orq_server.contact(e) is None for e in external_ids)
    assert not rows.exists()


def test_contactsync_resync_action(admin_client, orq_server):
    user = User.objects.create_user("ivy")
    orq_server.clear_requests()
    row = ContactSync.objects.get(user=user)
    response = contactsync_action(admin_client, "resync", [row.pk])
    assert "1 row was queued for sync." in response.content.decode()
    assert len(orq_server.api_requests()) == 1  # forced, though nothing changed


def test_contactsync_resync_redoes_a_failed_delete(admin_client, orq_server):
    user = User.objects.create_user("jon")
    external_id = str(user.pk)
    orq_server.add_fault("status", status=503, times=10)
    user.delete()
    row = ContactSync.objects.get(external_id=external_id)
    assert row.user_id is None
    assert row.operation == "delete"
    assert row.status != "synced"
    assert orq_server.contact(external_id) is not None
    orq_server.clear_faults()
    contactsync_action(admin_client, "resync", [row.pk])
    assert orq_server.contact(external_id) is None
    assert not ContactSync.objects.filter(pk=row.pk).exists()


def test_contactsync_mark_pending_action(admin_client, orq_server):
    user = User.objects.create_user("kim")
    row = ContactSync.objects.get(user=user)
    response = contactsync_action(admin_client, "mark_pending", [row.pk])
    assert "1 row marked pending." in response.content.decode()
    row.refresh_from_db()
    assert row.status == "pending"
    assert row.version > row.synced_version


def test_api_key_never_appears_in_admin_html(admin_client, orq_server, settings):
    key = settings.ORQ_CONTACTS["API_KEY"]
    # A server that echoes the credentials back in its error body.
    orq_server.add_fault("status", status=401, body=f'{{"error": "invalid key {key}"}}')
    user = User.objects.create_user("lee")
    row = ContactSync.objects.get(user=user)
    assert row.status == "failed"
    pages = [
        CHANGELIST,
        change_url(user),
        reverse("admin:django_orq_contacts_contactsync_changelist"),
        reverse("admin:django_orq_contacts_contactsync_change", args=[row.pk]),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200
        assert key not in response.content.decode(), page
    assert "[redacted key]" in admin_client.get(change_url(user)).content.decode()


class CustomUserAdmin(UserAdmin):
    list_display = ("username", "email")
    change_form_template = "admin/auth/user/change_form.html"

    def get_list_display(self, request):
        return [*super().get_list_display(request), "is_active"]


def test_attach_works_with_a_custom_user_admin(rf, admin_user):
    site = admin.AdminSite(name="custom")
    site.register(User, CustomUserAdmin)
    assert attach_to_user_admin(site) is True
    assert attach_to_user_admin(site) is True  # twice is harmless
    model_admin = site._registry[User]
    assert isinstance(model_admin, CustomUserAdmin)
    assert isinstance(model_admin, OrqUserAdminMixin)
    assert list(model_admin.actions).count(sync_to_orq) == 1
    request = rf.get("/")
    request.user = admin_user
    assert model_admin.get_list_display(request) == [
        "username",
        "email",
        "is_active",
        "orq_sync_status",
    ]
    assert admin_actions.OrqSyncStatusFilter in model_admin.get_list_filter(request)
    assert model_admin._orq_parent_template() == "admin/auth/user/change_form.html"


def test_attach_without_a_user_admin_does_nothing():
    assert attach_to_user_admin(admin.AdminSite(name="empty")) is False


def test_the_stock_user_admin_got_the_orq_parts():
    model_admin = admin.site._registry[User]
    assert isinstance(model_admin, UserAdmin)
    assert isinstance(model_admin, OrqUserAdminMixin)
    assert list(model_admin.actions).count(sync_to_orq) == 1
