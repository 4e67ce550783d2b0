"""The user -> contact mapping: defaults, the EXTERNAL_ID / CONTACT_BUILDER / SHOULD_SYNC hooks,
and the documented limits (README, "Contact mapping")."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from django_orq_contacts import payload
from django_orq_contacts.exceptions import PayloadError

User = get_user_model()


def configure(settings, **values):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, **values}


def make_user(**fields):
    fields.setdefault("pk", 7)
    fields.setdefault("username", "ada")
    return User(**fields)


# Hooks referenced by dotted path from the tests below.
def external_id_from_email(user):
    return f"site-{user.email}"


def nickname_builder(user):
    return {"display_name": f"@{user.username}", "tags": ["beta"], "metadata": {"plan": "pro"}}


def only_active(user):
    return user.is_active


def builder_that_raises(user):
    raise KeyError("profile")


# -- the default mapping --------------------------------------------------------------------


def test_default_contact_has_full_name_email_and_username_in_sdk_order():
    user = make_user(first_name="Ada", last_name="Lovelace", email="ada@example.com")
    body = payload.build(user)
    assert list(body) == list(payload.FIELDS)
    assert body == {
        "external_id": "7",
        "display_name": "Ada Lovelace",
        "email": "ada@example.com",
        "avatar_url": None,
        "tags": [],
        "metadata": {"username": "ada"},
    }


@pytest.mark.parametrize(("first", "last"), [("", ""), ("  ", " ")])
def test_display_name_falls_back_to_the_username(first, last):
    body = payload.build(make_user(first_name=first, last_name=last))
    assert body["display_name"] == "ada"


@pytest.mark.parametrize("email", ["", None, "   "])
def test_an_empty_email_is_sent_as_none_so_it_is_cleared(email):
    assert payload.build(make_user(email=email))["email"] is None


def test_email_comes_from_the_field_named_by_get_email_field_name(monkeypatch):
    # A model whose EMAIL_FIELD is not "email" (here: reusing last_name for the test).
    monkeypatch.setattr(User, "EMAIL_FIELD", "last_name")
    user = make_user(email="old@example.com", last_name="work@example.com")
    assert payload.build(user)["email"] == "work@example.com"


def test_the_password_is_never_part_of_the_payload(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
    user = make_user(email="ada@example.com")
    user.set_password("hunter2-secret")
    body = payload.build(user)
    assert "password" not in body
    text = json.dumps(body)
    assert user.password not in text
    assert "hunter2" not in text


def test_an_unsaved_user_without_pk_cannot_be_built():
    with pytest.raises(PayloadError, match="external_id"):
        payload.build(User(username="nobody"))


# -- EXTERNAL_ID ------------------------------------------------------------------------------


def test_external_id_from_an_attribute(settings):
    configure(settings, EXTERNAL_ID="username")
    assert payload.build(make_user(username="ada"))["external_id"] == "ada"


def test_external_id_from_a_dotted_callable(settings):
    configure(settings, EXTERNAL_ID="tests.test_payload.external_id_from_email")
    user = make_user(email="ada@example.com")
    assert payload.external_id_for(user) == "site-ada@example.com"
    assert payload.build(user)["external_id"] == "site-ada@example.com"


def test_external_id_from_a_callable_given_directly(settings):
    configure(settings, EXTERNAL_ID=lambda user: 1000 + user.pk)
    assert payload.build(make_user())["external_id"] == "1007"


@pytest.mark.parametrize("value", [None, "", "   ", "x" * 121, "a\x00b"])
def test_a_bad_external_id_is_a_payload_error(settings, value):
    configure(settings, EXTERNAL_ID=lambda user: value)
    with pytest.raises(PayloadError):
        payload.build(make_user())


def test_external_id_of_120_characters_is_accepted(settings):
    configure(settings, EXTERNAL_ID=lambda user: "x" * 120)
    assert payload.build(make_user())["external_id"] == "x" * 120


# -- CONTACT_BUILDER ---------------------------------------------------------------------------


def test_a_contact_builder_by_dotted_path_supplies_the_profile(settings):
    configure(settings, CONTACT_BUILDER="tests.test_payload.nickname_builder")
    body = payload.build(make_user(email="ada@example.com"))
    assert body == {
        "external_id": "7",
        "display_name": "@ada",
        # Fields the builder leaves out are sent empty, never taken from the default.
        "email": None,
        "avatar_url": None,
        "tags": ["beta"],
        "metadata": {"plan": "pro"},
    }


@pytest.mark.parametrize("key", ["external_id", "password", "phone"])
def test_a_builder_cannot_add_fields_or_set_the_external_id(settings, key):
    configure(settings, CONTACT_BUILDER=lambda user: {"display_name": "x", key: "y"})
    with pytest.raises(PayloadError, match="unknown contact fields"):
        payload.build(make_user())


def test_a_builder_that_raises_becomes_a_payload_error(settings):
    configure(settings, CONTACT_BUILDER="tests.test_payload.builder_that_raises")
    with pytest.raises(PayloadError, match="KeyError"):
        payload.build(make_user())


@pytest.mark.parametrize("result", [None, ["display_name"], "ada"])
def test_a_builder_must_return_a_mapping(settings, result):
    configure(settings, CONTACT_BUILDER=lambda user: result)
    with pytest.raises(PayloadError, match="not a dict"):
        payload.build(make_user())


def test_builder_values_are_normalised(settings):
    from django.utils.translation import gettext_lazy

    configure(
        settings,
        CONTACT_BUILDER=lambda user: {
            "display_name": gettext_lazy("  Ada  "),
            "avatar_url": "https://example.com/a.png",
            "tags": {"b", "a"},
            "metadata": {"n": 1, "ok": True, "nested": {"list": (1, 2)}},
        },
    )
    body = payload.build(make_user())
    assert body["display_name"] == "Ada"
    assert body["avatar_url"] == "https://example.com/a.png"
    assert body["tags"] == ["a", "b"]
    assert body["metadata"] == {"n": 1, "ok": True, "nested": {"list": [1, 2]}}


# -- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        ({"display_name": "x" * 513}, "display_name is longer"),
        ({"display_name": 42}, "must be a string"),
        ({"email": "not-an-email"}, "email is not a valid"),
        ({"email": "a" * 250 + "@example.com"}, "email is longer"),
        ({"avatar_url": "javascript:alert(1)"}, "avatar_url"),
        ({"avatar_url": "https://example.com/" + "a" * 2048}, "avatar_url is longer"),
        ({"tags": "staff"}, "tags must be a list"),
        ({"tags": ["ok", ""]}, "non-empty"),
        ({"tags": ["t" * 129]}, "tag is longer"),
        ({"tags": [f"t{i}" for i in range(101)]}, "more than 100 tags"),
        ({"metadata": ["not", "a", "dict"]}, "metadata must be a dict"),
        ({"metadata": {"blob": "x" * 17000}}, "bytes as JSON"),
        ({"metadata": {"nan": float("nan")}}, "NaN"),
        ({"metadata": {1: "int key"}}, "keys must be strings"),
        ({"metadata": {"raw": b"bytes"}}, "bytes is not JSON"),
    ],
)
def test_values_outside_the_documented_limits_are_payload_errors(settings, profile, reason):
    configure(settings, CONTACT_BUILDER=lambda user: profile)
    with pytest.raises(PayloadError, match=reason):
        payload.build(make_user())


def test_metadata_depth_limit(settings):
    def nest(levels):
        value: dict = {}
        for _ in range(levels):
            value = {"d": value}
        return value

    configure(settings, CONTACT_BUILDER=lambda user: {"metadata": nest(8)})
    assert payload.build(make_user())["metadata"] == nest(8)
    configure(settings, CONTACT_BUILDER=lambda user: {"metadata": nest(9)})
    with pytest.raises(PayloadError, match="deeper"):
        payload.build(make_user())


def test_limits_are_inclusive(settings):
    configure(
        settings,
        CONTACT_BUILDER=lambda user: {
            "display_name": "d" * 512,
            "tags": ["t" * 128] * 100,
        },
    )
    body = payload.build(make_user())
    assert len(body["display_name"]) == 512
    assert len(body["tags"]) == 100


# -- SHOULD_SYNC, hashing and relevant saves ----------------------------------------------------


def test_should_sync_defaults_to_true_and_follows_the_hook(settings):
    assert payload.should_sync(make_user(is_active=False)) is True
    configure(settings, SHOULD_SYNC="tests.test_payload.only_active")
    assert payload.should_sync(make_user(is_active=True)) is True
    assert payload.should_sync(make_user(is_active=False)) is False


@pytest.mark.django_db(transaction=True)
def test_an_excluded_user_is_never_sent(settings, orq_server):
    configure(settings, SHOULD_SYNC="tests.test_payload.only_active")
    User.objects.create_user("ghost", is_active=False)
    User.objects.create_user("ada", is_active=True)
    assert [r.json()["metadata"]["username"] for r in orq_server.api_requests()] == ["ada"]


def test_payload_hash_is_stable_and_depends_on_content_and_resource():
    first = payload.build(make_user(email="ada@example.com"))
    again = payload.build(make_user(email="ada@example.com"))
    other = payload.build(make_user(email="ada@example.org"))
    digest = payload.payload_hash(first, "contacts")
    assert digest == payload.payload_hash(again, "contacts")
    assert digest != payload.payload_hash(other, "contacts")
    assert digest != payload.payload_hash(first, "identities")


@pytest.mark.parametrize(
    ("update_fields", "relevant"),
    [
        (None, True),
        (frozenset({"last_login"}), False),
        (frozenset({"password"}), False),
        (frozenset({"last_login", "email"}), True),
    ],
)
def test_only_saves_that_may_change_the_contact_are_relevant(update_fields, relevant):
    assert payload.is_sync_relevant(update_fields) is relevant


def test_sync_fields_narrow_what_is_relevant(settings):
    configure(settings, SYNC_FIELDS=["email"])
    assert payload.is_sync_relevant(frozenset({"email"})) is True
    assert payload.is_sync_relevant(frozenset({"first_name"})) is False
