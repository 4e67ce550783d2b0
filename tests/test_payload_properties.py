"""Bad input, property-based: whatever a builder or EXTERNAL_ID hook returns, ``build()`` either
gives a JSON body within the documented limits or raises PayloadError, never anything else.
A PayloadError then fails that user without an HTTP call or a retry, and a bulk run goes on.
"""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils.translation import gettext_lazy
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from django_orq_contacts import payload, sync
from django_orq_contacts.client import encode_body
from django_orq_contacts.exceptions import PayloadError
from django_orq_contacts.models import ContactSync

User = get_user_model()

# The autouse orq_server fixture is function-scoped; examples here never touch the server.
PROPERTY = hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies ---------------------------------------------------------------------------------

# Every code point, lone surrogates (category Cs) and NUL included.
any_char = st.characters(codec=None, categories=None)
tricky_text = st.one_of(
    st.text(any_char, max_size=40),
    st.text(st.sampled_from("😀👩‍💻🇫🇷עברית العربية \u202e\u200f\u0000\ud800\udfff é"), max_size=30),
    st.sampled_from(["", " ", "\t\n", "\ud83d", "a\x00b"]),
    # Built lazily: a literal 100k-character example would bloat Hypothesis's reprs.
    st.sampled_from(["x", "😀", "\u202e"]).map(lambda char: char * 100_000),
)
lazy_text = st.sampled_from([gettext_lazy("Lazy name"), gettext_lazy("")])
emails = st.one_of(
    st.none(),
    st.sampled_from(
        ["", "   ", "ada@example.com", " ada@example.com ", "a@b", "@", "x@exämple.com"]
    ),
    st.emails(),
    tricky_text,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**64)]),
    # More digits than int -> str allows (sys.get_int_max_str_digits()).
    st.just(5000).map(lambda digits: 10**digits),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.sampled_from([None, dt.timezone.utc])),
    st.dates(),
    st.times(),
    st.uuids(),
    st.binary(max_size=10),
    tricky_text,
    lazy_text,
    st.just(dt.timedelta(seconds=1)),
    st.just(object()),
)
keys = st.one_of(
    st.text(any_char, max_size=10), lazy_text, st.integers(), st.none(), st.tuples(st.integers())
)


def _containers(children):
    hashable = st.one_of(
        st.integers(), st.text(max_size=5), st.uuids(), st.decimals(allow_nan=False)
    )
    return st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4),
        st.sets(hashable, max_size=4),
        st.frozensets(hashable, max_size=4),
    )


json_ish = st.recursive(scalars, _containers, max_leaves=25)
metadata = st.one_of(
    st.dictionaries(keys, json_ish, max_size=6),
    st.builds(lambda depth: _nest(depth), st.integers(min_value=0, max_value=40)),
    json_ish,
)
tags = st.one_of(
    st.none(),
    st.lists(st.one_of(tricky_text, lazy_text, st.integers()), max_size=5),
    st.sets(st.text(max_size=8), max_size=5),
    st.lists(st.just("tag"), min_size=99, max_size=102),
    tricky_text,
)
profiles = st.fixed_dictionaries(
    {},
    optional={
        "display_name": st.one_of(st.none(), tricky_text, lazy_text, st.integers()),
        "email": emails,
        "avatar_url": st.one_of(st.none(), tricky_text, st.sampled_from(["https://e.test/a.png"])),
        "tags": tags,
        "metadata": metadata,
        "password": st.just("hunter2"),
        "external_id": st.just("override"),
    },
)


def _nest(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"d": value}
    return value


# -- the property ---------------------------------------------------------------------------------


def build_or_payload_error(**orq_settings):
    """Build for a fixed unsaved user; return the body or None for a PayloadError."""
    user = User(pk=42, username="prop", first_name="Pro", last_name="Perty", email="p@example.com")
    with override_settings(ORQ_CONTACTS={**django_settings.ORQ_CONTACTS, **orq_settings}):
        try:
            first = payload.build(user)
        except PayloadError:
            return None
        # Deterministic: the same input builds the same body (stable hash, no spurious syncs).
        again = payload.build(user)
        assert payload.payload_hash(first, "contacts") == payload.payload_hash(again, "contacts")
    assert_valid_body(first)
    return first


def assert_valid_body(body):
    assert list(body) == list(payload.FIELDS)
    assert "password" not in body
    # Strict JSON (no NaN/Infinity) that the client can encode byte-for-byte.
    text = json.dumps(body, allow_nan=False)
    assert json.loads(text) == body
    encode_body(body)
    external_id = body["external_id"]
    assert isinstance(external_id, str)
    assert external_id.strip()
    assert len(external_id) <= payload.MAX_EXTERNAL_ID
    for name, limit in [
        ("display_name", payload.MAX_DISPLAY_NAME),
        ("email", payload.MAX_EMAIL),
        ("avatar_url", payload.MAX_AVATAR_URL),
    ]:
        value = body[name]
        assert value is None or (isinstance(value, str) and 0 < len(value) <= limit)
    assert isinstance(body["tags"], list)
    assert len(body["tags"]) <= payload.MAX_TAGS
    assert all(isinstance(t, str) and 0 < len(t) <= payload.MAX_TAG for t in body["tags"])
    assert isinstance(body["metadata"], dict)
    meta_size = len(json.dumps(body["metadata"], separators=(",", ":"), ensure_ascii=True))
    assert meta_size <= payload.MAX_METADATA_BYTES
    # Every string sent is valid UTF-8 without NUL (no lone surrogates).
    for string in _strings(body):
        assert "\x00" not in string
        string.encode("utf-8")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@PROPERTY
@given(profile=profiles)
def test_any_builder_output_gives_a_valid_body_or_a_payload_error(profile):
    body = build_or_payload_error(CONTACT_BUILDER=lambda user: profile)
    if body is not None:
        assert body["external_id"] == "42"


@PROPERTY
@given(display_name=tricky_text)
def test_arbitrary_display_names(display_name):
    body = build_or_payload_error(CONTACT_BUILDER=lambda user: {"display_name": display_name})
    if body is not None and body["display_name"] is not None:
        assert body["display_name"] == display_name.strip()


@PROPERTY
@given(email=emails)
def test_arbitrary_emails_and_blank_ones_clear(email):
    body = build_or_payload_error(CONTACT_BUILDER=lambda user: {"email": email})
    if email is None or (isinstance(email, str) and not email.strip()):
        assert body is not None
        assert body["email"] is None


@PROPERTY
@given(meta=metadata)
def test_arbitrary_metadata(meta):
    body = build_or_payload_error(CONTACT_BUILDER=lambda user: {"metadata": meta})
    if body is not None:
        # Only a mapping (or None, meaning none) is accepted as metadata.
        assert meta is None or isinstance(meta, dict)


@PROPERTY
@given(value=st.one_of(scalars, st.lists(st.integers(), max_size=2)))
def test_arbitrary_external_ids_are_nonempty_stable_strings(value):
    body = build_or_payload_error(EXTERNAL_ID=lambda user: value)
    if body is not None:
        assert body["external_id"] == str(value)


def test_self_referencing_metadata_is_refused_not_a_recursion_error():
    loop: dict = {}
    loop["self"] = loop
    assert build_or_payload_error(CONTACT_BUILDER=lambda user: {"metadata": loop}) is None


@pytest.mark.parametrize(
    "hook",
    [
        {"EXTERNAL_ID": lambda user: user.missing_attribute},
        {"EXTERNAL_ID": "no_such_attribute"},
        {"CONTACT_BUILDER": lambda user: 1 / 0},
        {"CONTACT_BUILDER": lambda user: {"metadata": {"x": 10**5000}}},
    ],
)
def test_hooks_that_blow_up_are_payload_errors(hook):
    assert build_or_payload_error(**hook) is None


# -- what a PayloadError does to a sync -----------------------------------------------------------


def refuse_bad(user):
    """A builder whose data is broken for some users: the username says which."""
    name = "\ud800broken" if user.username.startswith("bad") else user.username
    return {"display_name": name}


@pytest.mark.django_db(transaction=True)
def test_payload_error_fails_the_user_without_a_call_or_retry(settings, orq_server):
    settings.ORQ_CONTACTS = {
        **settings.ORQ_CONTACTS,
        "CONTACT_BUILDER": "tests.test_payload_properties.refuse_bad",
    }
    user = User.objects.create_user("bad-ada")
    assert orq_server.requests == []
    row = ContactSync.objects.get(user=user)
    assert row.status == "failed"
    assert row.attempts == 1
    assert row.next_attempt_at is None  # no retry is ever scheduled
    assert row.last_status_code is None
    assert "PayloadError" in row.last_error
    assert "surrogate" in row.last_error

    # Neither the sweeper nor a direct resync makes a call for it.
    assert sync.sync_due() == []
    result = sync.sync_user(user.pk)
    assert (result.outcome, result.retry_in, result.calls) == (sync.FAILED, None, 0)
    assert orq_server.requests == []


@pytest.mark.django_db(transaction=True)
def test_payload_error_in_the_celery_task_is_not_retried(settings, orq_server):
    from django_orq_contacts import tasks

    settings.ORQ_CONTACTS = {
        **settings.ORQ_CONTACTS,
        "CONTACT_BUILDER": "tests.test_payload_properties.refuse_bad",
        "AUTO_SYNC": False,
    }
    user = User.objects.create_user("bad-bob")
    outcome = tasks.sync_contact.apply(args=(str(user.pk),))
    # A retry would show as state RETRY; a permanent failure completes with "failed".
    assert outcome.state == "SUCCESS"
    assert outcome.result == sync.FAILED
    assert orq_server.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_bulk_run_goes_on_past_payload_errors(settings, orq_server):
    settings.ORQ_CONTACTS = {
        **settings.ORQ_CONTACTS,
        "CONTACT_BUILDER": "tests.test_payload_properties.refuse_bad",
    }
    names = ["alice", "bad-1", "bob", "bad-2", "carol"]
    users = User.objects.bulk_create([User(username=name) for name in names])
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command(
            "orq_sync_contacts", "--no-progress", "--concurrency=2", stdout=out, stderr=err
        )
    assert excinfo.value.returncode == 1
    assert "synced: 3" in out.getvalue()
    assert "failed: 2" in out.getvalue()
    sent = sorted(r.json()["display_name"] for r in orq_server.api_requests("POST"))
    assert sent == ["alice", "bob", "carol"]
    statuses = dict(ContactSync.objects.values_list("user__username", "status"))
    assert statuses == {
        "alice": "synced",
        "bob": "synced",
        "carol": "synced",
        "bad-1": "failed",
        "bad-2": "failed",
    }
    assert len(users) == 5
