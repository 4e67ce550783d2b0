"""The HTTP client against the stand-in Orq server: exact wire bytes and headers, timeouts,
refused redirects, and every error class with its retry hints. No Celery involved."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest
import requests

from django_orq_contacts import __version__, client, ratelimit
from django_orq_contacts.client import OrqClient, encode_body, parse_retry_after
from django_orq_contacts.exceptions import (
    BODY_LIMIT,
    OrqAuthError,
    OrqConnectionError,
    OrqPermanentError,
    OrqRateLimitError,
    OrqRedirectError,
    OrqServerError,
    OrqTransientError,
)
from django_orq_contacts.testing.pytest_plugin import TEST_API_KEY
from django_orq_contacts.testing.server import FakeOrqServer

BODY = {
    "external_id": "42",
    "display_name": "Zoë Ünïcode 😀",
    "email": "zoe@example.com",
    "avatar_url": None,
    "tags": ["a", "b"],
    "metadata": {"username": "zoë", "n": 1},
}
# What the official SDK sends for BODY: compact separators, ASCII escapes, fields in order.
WIRE = (
    b'{"external_id":"42","display_name":"Zo\\u00eb \\u00dcn\\u00efcode \\ud83d\\ude00",'
    b'"email":"zoe@example.com","avatar_url":null,"tags":["a","b"],'
    b'"metadata":{"username":"zo\\u00eb","n":1}}'
)


def configure(settings, **values):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, **values}


@pytest.fixture(autouse=True)
def _no_shared_pause():
    # A 429 below sets the limiter's shared pause; the next test must not wait for it.
    yield
    ratelimit.reset()


def post(body=BODY):
    return OrqClient().request("POST", "/v2/contacts", body)


# -- what goes on the wire --------------------------------------------------------------------


def test_post_sends_the_sdk_bytes_and_headers(orq_server):
    response = post()
    assert response.status == 200
    assert response.data["_id"]
    (sent,) = orq_server.requests
    assert (sent.method, sent.path) == ("POST", "/v2/contacts")
    assert sent.body == WIRE
    assert encode_body(BODY) == WIRE
    assert sent.header("Authorization") == f"Bearer {TEST_API_KEY}"
    assert sent.header("Accept") == "application/json"
    assert sent.header("Content-Type") == "application/json"
    assert sent.header("User-Agent") == f"django-orq-contacts/{__version__}"
    assert sent.header("Content-Length") == str(len(WIRE))


def test_a_user_save_sends_exactly_these_bytes(orq_server, django_user_model, transactional_db):
    user = django_user_model.objects.create_user(
        "zoë", email="zoe@example.com", first_name="Zoë", last_name="Ünïcode 😀"
    )
    (sent,) = orq_server.requests
    assert sent.body == (
        b'{"external_id":"%d","display_name":"Zo\\u00eb \\u00dcn\\u00efcode \\ud83d\\ude00",'
        b'"email":"zoe@example.com","avatar_url":null,"tags":[],'
        b'"metadata":{"username":"zo\\u00eb"}}' % user.pk
    )


def test_delete_sends_no_body_and_no_content_type(orq_server):
    post()
    OrqClient().request("DELETE", "/v2/contacts/42")
    sent = orq_server.requests[-1]
    assert sent.body == b""
    assert sent.header("Content-Type") is None
    assert sent.status == 204
    assert orq_server.contacts() == []


def test_external_ids_are_percent_encoded_in_paths():
    assert client.item_path("contacts", "a/b c?d#é") == "/v2/contacts/a%2Fb%20c%3Fd%23%C3%A9"


@pytest.mark.parametrize(("setting", "expected"), [((2, 7), (2.0, 7.0)), (3, (3.0, 3.0))])
def test_every_request_carries_the_configured_timeout(
    settings, orq_server, monkeypatch, setting, expected
):
    configure(settings, TIMEOUT=setting)
    seen = []
    original = requests.Session.request

    def spy(self, method, url, **kwargs):
        seen.append((kwargs.get("timeout"), kwargs.get("allow_redirects")))
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    post()
    OrqClient().request("DELETE", "/v2/contacts/42")
    assert seen == [(expected, False), (expected, False)]


@pytest.mark.parametrize("status", [200, 201, 202, 204])
@pytest.mark.parametrize("body", ["", "<html><body>OK</body></html>", '{"truncated": '])
def test_any_2xx_is_success_whatever_its_body(orq_server, status, body):
    orq_server.add_fault("status", status=status, body=body)
    response = post()
    assert response.status == status
    assert response.data is None


# -- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_refused_and_never_followed(orq_server, status):
    with FakeOrqServer() as elsewhere:
        orq_server.add_fault("redirect", status=status, location=f"{elsewhere.url}/v2/contacts")
        with pytest.raises(OrqRedirectError) as excinfo:
            post()
        assert elsewhere.requests == []
    error = excinfo.value
    assert error.status == status
    assert not error.transient
    assert isinstance(error, OrqPermanentError)


# -- error classes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, OrqPermanentError),
        (404, OrqPermanentError),
        (422, OrqPermanentError),
        (401, OrqAuthError),
        (403, OrqAuthError),
        (408, OrqServerError),
        (500, OrqServerError),
        (502, OrqServerError),
        (503, OrqServerError),
        (504, OrqServerError),
        (429, OrqRateLimitError),
    ],
)
def test_each_status_maps_to_its_error_class(orq_server, status, error_class):
    orq_server.add_fault("status", status=status, headers={"Retry-After": "0"})
    with pytest.raises(error_class) as excinfo:
        post()
    error = excinfo.value
    assert type(error) is error_class
    assert error.status == status
    assert error.transient is (status in (408, 429) or status >= 500)
    assert f"HTTP {status}" in str(error)


def test_a_wrong_api_key_is_an_auth_error_from_the_server(settings, orq_server):
    configure(settings, API_KEY="sk-wrong-key-123")
    with pytest.raises(OrqAuthError) as excinfo:
        post()
    assert excinfo.value.status == 401
    assert "sk-wrong-key-123" not in str(excinfo.value)
    assert "sk-wrong-key-123" not in repr(excinfo.value)


def test_retry_after_seconds(orq_server):
    orq_server.add_fault("status", status=429, headers={"Retry-After": "1"})
    with pytest.raises(OrqRateLimitError) as excinfo:
        post()
    assert excinfo.value.retry_after == 1.0


def test_retry_after_ms_wins_over_retry_after(orq_server):
    orq_server.add_fault(
        "status", status=503, headers={"Retry-After": "9", "retry-after-ms": "250"}
    )
    with pytest.raises(OrqServerError) as excinfo:
        post()
    assert excinfo.value.retry_after == 0.25


def test_retry_after_http_date(orq_server):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    orq_server.add_fault("status", status=503, headers={"Retry-After": when})
    with pytest.raises(OrqServerError) as excinfo:
        post()
    # An HTTP date has one-second resolution and the call took a moment.
    assert 115 <= excinfo.value.retry_after <= 120


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"Retry-After": "Wed, 21 Oct 2015 07:29:00 GMT"}, 60.0),
        ({"Retry-After-Ms": "1200"}, 1.2),
        ({"retry-after-ms": "junk", "Retry-After": "2"}, 2.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(headers, now=now) == expected


def test_a_429_makes_every_process_pause_through_the_cache(orq_server):
    orq_server.add_fault("status", status=429, headers={"Retry-After": "120"})
    with pytest.raises(OrqRateLimitError):
        post()
    # The next call is not sent at all while the shared pause lasts.
    with pytest.raises(OrqRateLimitError) as excinfo:
        post()
    assert excinfo.value.status is None
    assert len(orq_server.requests) == 1


def test_a_slow_answer_times_out(settings, orq_server):
    configure(settings, TIMEOUT=(2, 0.3))
    orq_server.add_fault("delay", seconds=1.0)
    with pytest.raises(OrqConnectionError, match="timed out") as excinfo:
        post()
    assert excinfo.value.transient
    assert excinfo.value.status is None


def test_a_trickled_body_is_cut_off_at_the_deadline(settings, orq_server):
    # Each byte comes well inside the read timeout, so only the whole-exchange deadline
    # (connect + read timeout) can stop it; unbounded, this answer would take ~40 s.
    configure(settings, TIMEOUT=(0.5, 0.5))
    orq_server.add_fault("trickle", seconds=0.1)
    started = time.monotonic()
    with pytest.raises(OrqConnectionError, match="timed out"):
        post()
    # Not a speed assertion: a tenth of the trickle's length shows it was cut, not waited out.
    assert time.monotonic() - started < 10


def test_a_trickle_slower_than_the_read_timeout_times_out(settings, orq_server):
    configure(settings, TIMEOUT=(1, 0.2))
    orq_server.add_fault("trickle", seconds=0.5)
    with pytest.raises(OrqConnectionError, match="timed out"):
        post()


def test_connection_refused_is_transient(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(settings, BASE_URL=f"http://127.0.0.1:{port}")
    with pytest.raises(OrqConnectionError) as excinfo:
        post()
    assert excinfo.value.transient
    assert "ConnectionError" in str(excinfo.value)
    assert str(port) not in str(excinfo.value)


def test_a_dropped_connection_is_transient(orq_server):
    orq_server.add_fault("close")
    with pytest.raises(OrqTransientError):
        post()


# -- what an error carries --------------------------------------------------------------------------


def test_error_bodies_are_cut_short(orq_server):
    orq_server.add_fault("status", status=502, body="<html>" + "x" * 50_000 + "</html>")
    with pytest.raises(OrqServerError) as excinfo:
        post()
    assert len(excinfo.value.body) <= BODY_LIMIT
    assert excinfo.value.body.startswith("<html>")
    assert len(str(excinfo.value)) < 300


def test_truncated_json_error_is_still_classified(orq_server):
    orq_server.add_fault("status", status=422, body='{"message": "email is inv')
    with pytest.raises(OrqPermanentError) as excinfo:
        post()
    assert excinfo.value.status == 422


def test_the_api_message_is_kept_but_the_key_and_emails_never(orq_server):
    echo = f'{{"message": "key {TEST_API_KEY} for zoe@example.com is not allowed"}}'
    orq_server.add_fault("status", status=403, body=echo)
    with pytest.raises(OrqAuthError) as excinfo:
        post()
    error = excinfo.value
    assert "is not allowed" in str(error)
    for text in (str(error), repr(error), error.body, repr(error.args)):
        assert TEST_API_KEY not in text
        assert "zoe@example.com" not in text


def test_the_client_repr_hides_the_key():
    client_ = OrqClient(api_key="sk-very-secret-key", base_url="https://my.orq.ai")
    assert "sk-very-secret-key" not in repr(client_)


def without_key_setting(settings):
    settings.ORQ_CONTACTS = {k: v for k, v in settings.ORQ_CONTACTS.items() if k != "API_KEY"}


def test_a_client_without_a_key_refuses_to_start(settings, monkeypatch):
    monkeypatch.delenv("ORQ_API_KEY", raising=False)
    without_key_setting(settings)
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="API_KEY"):
        OrqClient()


def test_the_environment_variable_supplies_the_key(settings, orq_server, monkeypatch):
    without_key_setting(settings)
    monkeypatch.setenv("ORQ_API_KEY", TEST_API_KEY)
    assert post().status == 200
    assert orq_server.requests[0].header("Authorization") == f"Bearer {TEST_API_KEY}"
