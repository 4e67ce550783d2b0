"""The sync backends: HTTP (contacts and identities, POST then PATCH on a duplicate, deletes),
and the locmem / console / dummy ones of the test kit."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model

import django_orq_contacts
from django_orq_contacts.backends import get_backend, locmem
from django_orq_contacts.backends.console import ConsoleBackend
from django_orq_contacts.backends.dummy import DummyBackend
from django_orq_contacts.backends.http import HttpBackend, is_duplicate, wire_body
from django_orq_contacts.exceptions import OrqPermanentError, OrqServerError
from django_orq_contacts.models import ContactSync

User = get_user_model()


def contact(external_id="u/1 é", **fields):
    body = {
        "external_id": external_id,
        "display_name": "Ada",
        "email": "ada@example.com",
        "avatar_url": None,
        "tags": ["t"],
        "metadata": {"username": "ada"},
    }
    body.update(fields)
    return body


def methods(server):
    return [(r.method, r.path, r.status) for r in server.requests]


def configure(settings, **values):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, **values}


# -- contacts -------------------------------------------------------------------------------------


def test_contacts_upsert_is_one_post_answered_200(orq_server):
    result = HttpBackend(resource="contacts").upsert(contact())
    stored = orq_server.contact("u/1 é")
    assert result.orq_id == stored["_id"]
    assert result.calls == 1
    assert methods(orq_server) == [("POST", "/v2/contacts", 200)]


def test_create_only_contacts_fall_back_to_patch_by_encoded_external_id(orq_server):
    orq_server.configure(mode="create_only")
    backend = HttpBackend(resource="contacts")
    first = backend.upsert(contact())
    assert first.calls == 1
    second = backend.upsert(contact(display_name="Ada L."))
    assert second.calls == 2
    assert second.orq_id == first.orq_id
    assert methods(orq_server) == [
        ("POST", "/v2/contacts", 201),
        ("POST", "/v2/contacts", 409),
        ("PATCH", "/v2/contacts/u%2F1%20%C3%A9", 200),
    ]
    patch = orq_server.requests[-1].json()
    assert "external_id" not in patch
    assert patch["display_name"] == "Ada L."
    assert orq_server.contact("u/1 é")["display_name"] == "Ada L."
    assert len(orq_server.contacts()) == 1


def test_once_create_only_is_known_a_synced_contact_is_patched_first(orq_server):
    orq_server.configure(mode="create_only")
    backend = HttpBackend(resource="contacts")
    backend.upsert(contact())
    backend.upsert(contact())  # learns "create-only" from the 409
    orq_server.clear_requests()
    result = backend.upsert(contact(email=None), known=True)
    assert result.calls == 1
    assert methods(orq_server) == [("PATCH", "/v2/contacts/u%2F1%20%C3%A9", 200)]
    assert orq_server.contact("u/1 é")["email"] is None


def test_a_known_contact_deleted_on_orq_is_created_again(orq_server):
    orq_server.configure(mode="create_only")
    backend = HttpBackend(resource="contacts")
    backend.upsert(contact())
    backend.upsert(contact())
    orq_server.reset()
    orq_server.configure(mode="create_only")
    result = backend.upsert(contact(), known=True)
    assert result.calls == 2
    assert [r.status for r in orq_server.requests] == [404, 201]
    assert orq_server.contact("u/1 é") is not None


@pytest.mark.parametrize(
    ("status", "message", "duplicate"),
    [
        (409, "whatever", True),
        (400, "Contact already exists", True),
        (422, "duplicate external_id", True),
        (400, "email is invalid", False),
        (404, "already exists", False),
    ],
)
def test_duplicate_detection(status, message, duplicate):
    error = OrqPermanentError(message, status=status, body=f'{{"error": "{message}"}}')
    assert is_duplicate(error) is duplicate


def test_a_non_duplicate_4xx_on_create_is_raised_without_patch(orq_server):
    orq_server.add_fault("status", status=422, body='{"error": "email is invalid"}')
    with pytest.raises(OrqPermanentError):
        HttpBackend(resource="contacts").upsert(contact())
    assert [r.method for r in orq_server.requests] == ["POST"]


@pytest.mark.parametrize("status", [204, 404])
def test_contacts_delete_accepts_204_and_404(orq_server, status):
    backend = HttpBackend(resource="contacts")
    if status == 204:
        backend.upsert(contact())
    assert backend.delete("u/1 é") == 1
    assert methods(orq_server)[-1] == ("DELETE", "/v2/contacts/u%2F1%20%C3%A9", status)
    assert orq_server.contacts() == []


def test_delete_raises_other_errors(orq_server):
    orq_server.add_fault("status", status=500, method="DELETE")
    with pytest.raises(OrqServerError):
        HttpBackend(resource="contacts").delete("42")


# -- identities -----------------------------------------------------------------------------------


def test_identities_create_answers_201_wrapped(orq_server):
    result = HttpBackend(resource="identities").upsert(contact())
    stored = orq_server.contact("u/1 é", resource="identities")
    assert result.orq_id == stored["_id"]
    assert methods(orq_server) == [("POST", "/v2/identities", 201)]


def test_identities_duplicate_falls_back_to_patch(orq_server):
    backend = HttpBackend(resource="identities")
    backend.upsert(contact())
    result = backend.upsert(contact(display_name="New"))
    assert result.calls == 2
    assert [r.status for r in orq_server.requests] == [201, 409, 200]
    assert orq_server.requests[-1].path == "/v2/identities/u%2F1%20%C3%A9"
    assert orq_server.contact("u/1 é", resource="identities")["display_name"] == "New"


def test_identities_clear_email_with_an_empty_string(orq_server):
    backend = HttpBackend(resource="identities")
    backend.upsert(contact())
    orq_server.clear_requests()
    backend.upsert(contact(email=None, display_name=None), known=True)
    (patch,) = orq_server.requests
    assert patch.method == "PATCH"
    body = patch.json()
    assert body["email"] == ""
    assert body["display_name"] == ""
    assert "avatar_url" not in body  # no empty URI exists; omitting keeps it
    assert orq_server.contact("u/1 é", resource="identities")["email"] is None


def test_identities_delete_answers_200(orq_server):
    backend = HttpBackend(resource="identities")
    backend.upsert(contact())
    assert backend.delete("u/1 é") == 1
    assert methods(orq_server)[-1] == ("DELETE", "/v2/identities/u%2F1%20%C3%A9", 200)


def test_wire_body_keeps_sdk_order_for_both_resources():
    payload = contact(avatar_url=None, email=None)
    assert list(wire_body(payload, "contacts")) == list(payload)
    assert wire_body(payload, "contacts")["email"] is None
    identities = wire_body(payload, "identities")
    assert list(identities) == ["external_id", "display_name", "email", "tags", "metadata"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("resource", ["contacts", "identities"])
def test_a_user_email_cleared_is_cleared_on_orq(settings, orq_server, resource):
    configure(settings, RESOURCE=resource)
    user = User.objects.create_user("ada", email="ada@example.com")
    assert orq_server.contact(str(user.pk), resource=resource)["email"] == "ada@example.com"
    user.email = ""
    user.save()
    assert orq_server.contact(str(user.pk), resource=resource)["email"] is None
    sent = orq_server.requests[-1].json()
    assert sent["email"] == (None if resource == "contacts" else "")
    assert len(orq_server.contacts(resource)) == 1
    user.delete()
    assert orq_server.contacts(resource) == []


@pytest.mark.django_db(transaction=True)
def test_a_contact_created_elsewhere_is_adopted_not_duplicated(orq_server):
    orq_server.configure(mode="create_only")
    HttpBackend(resource="contacts").upsert(contact(external_id="1000"))
    orq_server.clear_requests()
    User.objects.create_user("ada", pk=1000, email="ada@example.com")
    assert [r.status for r in orq_server.requests] == [409, 200]
    assert orq_server.contact("1000")["email"] == "ada@example.com"
    row = ContactSync.objects.get(user_id=1000)
    assert row.status == "synced"
    assert row.orq_id == orq_server.contact("1000")["_id"]


# -- the test kit's backends ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_locmem_records_calls_in_the_outbox(orq_outbox, orq_server):
    user = User.objects.create_user("ada", email="ada@example.com")
    assert orq_outbox is django_orq_contacts.outbox
    assert [(e.action, e.external_id) for e in orq_outbox] == [("upsert", str(user.pk))]
    assert orq_outbox[0].payload["email"] == "ada@example.com"
    user.delete()
    assert orq_outbox[-1].action == "delete"
    assert orq_server.requests == []  # the network was never used


@pytest.mark.django_db(transaction=True)
def test_locmem_fail_next_makes_the_next_call_fail(orq_outbox):
    locmem.fail_next(OrqServerError("boom", status=503))
    user = User.objects.create_user("ada")
    row = ContactSync.objects.get(user=user)
    assert (row.status, row.last_status_code, row.attempts) == ("pending", 503, 1)
    assert orq_outbox == []
    user.first_name = "Ada"
    user.save()
    assert ContactSync.objects.get(user=user).status == "synced"
    assert len(orq_outbox) == 1


def test_locmem_reset_empties_everything():
    locmem.fail_next(RuntimeError("x"), times=3)
    locmem.get_outbox().append(locmem.OutboxEntry("delete", "1"))
    locmem.reset()
    assert locmem.get_outbox() == []
    assert locmem.LocmemBackend().delete("1") == 1  # no failure left queued
    locmem.reset()


def test_console_backend_prints_calls():
    stream = StringIO()
    backend = ConsoleBackend(stream=stream)
    result = backend.upsert(contact(external_id="7", display_name="Zoë"))
    assert backend.delete("7") == 1
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("orq upsert {")
    assert '"display_name": "Zoë"' in lines[0]
    assert lines[1] == 'orq delete "7"'
    assert result.orq_id == "console-7"


def test_dummy_backend_makes_no_calls():
    assert DummyBackend().upsert(contact()).calls == 0
    assert DummyBackend().delete("1") == 0


@pytest.mark.parametrize(
    "choice",
    ["django_orq_contacts.backends.dummy.DummyBackend", DummyBackend],
)
def test_get_backend_by_dotted_path_or_class(settings, choice):
    configure(settings, BACKEND=choice)
    assert isinstance(get_backend(), DummyBackend)
