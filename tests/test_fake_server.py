"""Tests for the stand-in Orq server, over real HTTP on loopback (no Django needed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from django_orq_contacts.testing.server import FakeOrqServer, OrqServerControl

KEY = "test-key"


@pytest.fixture
def orq() -> Iterator[FakeOrqServer]:
    with FakeOrqServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # never route loopback calls through an environment proxy
    session.headers["Authorization"] = f"Bearer {KEY}"
    yield session
    session.close()


def post(http: requests.Session, orq: FakeOrqServer, body: object, resource: str = "contacts"):
    return http.post(f"{orq.url}/v2/{resource}", json=body, timeout=5)


# -- contacts --------------------------------------------------------------------------------


def test_upsert_creates_then_replaces_with_200(orq, http):
    first = post(http, orq, {"external_id": "42", "email": "ada@example.com", "tags": ["a"]})
    assert first.status_code == 200
    contact = first.json()
    assert len(contact["_id"]) == 26
    assert contact["external_id"] == "42"
    assert contact["email"] == "ada@example.com"
    assert set(contact) == {
        "_id",
        "external_id",
        "display_name",
        "email",
        "avatar_url",
        "tags",
        "metadata",
        "created",
        "updated",
    }

    second = post(http, orq, {"external_id": "42", "display_name": "Ada"})
    assert second.status_code == 200
    assert second.json()["_id"] == contact["_id"]
    # Upsert replaces: fields not sent go back to empty.
    assert orq.contact("42") == second.json()
    assert second.json()["email"] is None
    assert second.json()["tags"] == []
    assert len(orq.contacts()) == 1


def test_create_only_mode_201_then_409():
    with FakeOrqServer(api_key=KEY, mode="create_only") as server, requests.Session() as s:
        s.trust_env = False
        s.headers["Authorization"] = f"Bearer {KEY}"
        assert post(s, server, {"external_id": "7"}).status_code == 201
        dup = post(s, server, {"external_id": "7"})
        assert dup.status_code == 409
        assert dup.json() == {"error": "Contact with external_id already exists"}


def test_get_patch_delete_by_id_and_by_percent_encoded_external_id(orq, http):
    created = post(http, orq, {"external_id": "a/b c", "email": "x@example.com"}).json()
    by_ext = f"{orq.url}/v2/contacts/{quote('a/b c', safe='')}"
    assert http.get(by_ext, timeout=5).json() == created
    assert http.get(f"{orq.url}/v2/contacts/{created['_id']}", timeout=5).json() == created

    patched = http.patch(by_ext, json={"display_name": "Ada"}, timeout=5)
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Ada"
    assert patched.json()["email"] == "x@example.com"  # untouched: PATCH is partial

    deleted = http.delete(by_ext, timeout=5)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert "Content-Length" not in deleted.headers
    assert orq.contacts() == []

    assert http.get(by_ext, timeout=5).json() == {"error": "Contact not found"}
    assert http.delete(by_ext, timeout=5).status_code == 404
    missing_patch = http.patch(by_ext, json={"email": None}, timeout=5)
    assert missing_patch.status_code == 404
    assert missing_patch.json() == {"message": "Contact not found"}


def test_list_pages_with_starting_after(orq, http):
    for n in range(5):
        post(http, orq, {"external_id": str(n)})
    page = http.get(f"{orq.url}/v2/contacts", params={"limit": 3}, timeout=5).json()
    assert page["object"] == "list"
    assert [c["external_id"] for c in page["data"]] == ["0", "1", "2"]
    assert page["has_more"] is True
    rest = http.get(
        f"{orq.url}/v2/contacts",
        params={"limit": 3, "starting_after": page["data"][-1]["_id"]},
        timeout=5,
    ).json()
    assert [c["external_id"] for c in rest["data"]] == ["3", "4"]
    assert rest["has_more"] is False
    bad = http.get(f"{orq.url}/v2/contacts", params={"limit": 51}, timeout=5)
    assert bad.status_code == 422


@pytest.mark.parametrize(
    "body",
    [{}, {"external_id": ""}, {"external_id": "   "}, {"external_id": "x" * 121}, ["x"], 3],
)
def test_invalid_bodies_get_422(orq, http, body):
    answer = post(http, orq, body)
    assert answer.status_code == 422
    assert "error" in answer.json()


def test_invalid_json_gets_400_and_120_chars_is_fine(orq, http):
    answer = http.post(f"{orq.url}/v2/contacts", data=b"{not json", timeout=5)
    assert answer.status_code == 400
    assert post(http, orq, {"external_id": "x" * 120}).status_code == 200


def test_chunked_request_body_is_read(orq, http):
    answer = http.post(
        f"{orq.url}/v2/contacts", data=iter([b'{"external_id":', b'"chunky"}']), timeout=5
    )
    assert answer.status_code == 200
    assert orq.contact("chunky") is not None


# -- identities ------------------------------------------------------------------------------


def test_identities_create_only_with_location_and_409(orq, http):
    answer = post(http, orq, {"external_id": "u1", "email": "a@example.com"}, "identities")
    assert answer.status_code == 201
    identity = answer.json()["identity"]
    assert answer.headers["Location"] == f"/v2/identities/{identity['_id']}"

    dup = post(http, orq, {"external_id": "u1"}, "identities")
    assert dup.status_code == 409
    assert dup.json()["code"] == 409
    assert dup.json()["details"] == []
    assert dup.json()["message"].endswith("already exists")
    assert orq.contacts() == []  # identities are a separate store


def test_identities_patch_get_delete(orq, http):
    post(http, orq, {"external_id": "u1", "email": "a@example.com", "tags": ["t"]}, "identities")
    url = f"{orq.url}/v2/identities/u1"
    patched = http.patch(url, json={"email": "", "display_name": "Ada"}, timeout=5)
    assert patched.status_code == 200
    assert patched.json()["identity"]["email"] is None
    assert patched.json()["identity"]["tags"] == ["t"]
    # Identities' fields are not nullable.
    assert http.patch(url, json={"email": None}, timeout=5).status_code == 422
    assert http.get(url, timeout=5).json()["identity"]["display_name"] == "Ada"

    deleted = http.delete(url, timeout=5)
    assert (deleted.status_code, deleted.json()) == (200, {})
    gone = http.get(url, timeout=5)
    assert gone.status_code == 404
    assert gone.json() == {"message": "Identity not found", "code": 404, "details": []}


# -- auth and recording ----------------------------------------------------------------------


def test_wrong_or_missing_key_gets_401(orq, http):
    wrong = http.post(
        f"{orq.url}/v2/contacts",
        json={"external_id": "1"},
        headers={"Authorization": "Bearer nope"},
        timeout=5,
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "Unauthorized"}
    bare = requests.Session()
    bare.trust_env = False
    assert bare.get(f"{orq.url}/v2/contacts", timeout=5).status_code == 401
    assert orq.contacts() == []


def test_without_api_key_any_bearer_token_but_one_is_needed():
    with FakeOrqServer() as server, requests.Session() as s:
        s.trust_env = False
        assert s.get(f"{server.url}/v2/contacts", timeout=5).status_code == 401
        s.headers["Authorization"] = "Bearer whatever"
        assert s.get(f"{server.url}/v2/contacts", timeout=5).status_code == 200


def test_requests_are_recorded(orq, http):
    post(http, orq, {"external_id": "1"})
    http.get(f"{orq.url}/v2/contacts/1", timeout=5)
    recorded = orq.requests
    assert [(r.method, r.path, r.status) for r in recorded] == [
        ("POST", "/v2/contacts", 200),
        ("GET", "/v2/contacts/1", 200),
    ]
    assert recorded[0].json() == {"external_id": "1"}
    assert recorded[0].header("authorization") == f"Bearer {KEY}"
    assert recorded[0].fault is None
    assert not recorded[0].rejected
    assert len(orq.api_requests(method="get")) == 1
    orq.clear_requests()
    assert orq.requests == []


# -- faults ----------------------------------------------------------------------------------


def test_status_fault_with_headers_and_raw_body_then_normal(orq, http):
    orq.add_fault(
        "status",
        status=503,
        headers={"Retry-After": "2"},
        body="<html>bad gateway</html>",
        times=2,
    )
    for _ in range(2):
        answer = post(http, orq, {"external_id": "1"})
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "2"
        assert answer.headers["Content-Type"].startswith("text/html")
        assert answer.text == "<html>bad gateway</html>"
    assert orq.contacts() == []
    assert post(http, orq, {"external_id": "1"}).status_code == 200
    assert [r.rejected for r in orq.requests] == [True, True, False]


def test_fault_filters_by_method_and_path(orq, http):
    orq.add_fault("status", status=500, method="PATCH", path_contains="/v2/contacts/")
    assert post(http, orq, {"external_id": "1"}).status_code == 200
    assert http.get(f"{orq.url}/v2/contacts/1", timeout=5).status_code == 200
    assert http.patch(f"{orq.url}/v2/contacts/1", json={}, timeout=5).status_code == 500


def test_truncated_json_body_fault(orq, http):
    orq.add_fault("status", status=200, body='{"_id": "01')
    answer = post(http, orq, {"external_id": "1"})
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_delay_fault_outlasts_client_timeout_but_still_applies(orq, http):
    orq.add_fault("delay", seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(f"{orq.url}/v2/contacts", json={"external_id": "slow"}, timeout=(1, 0.15))
    deadline = time.monotonic() + 3
    while orq.contact("slow") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert orq.contact("slow") is not None
    assert orq.requests[-1].fault == "delay"


def test_trickle_fault(orq, http):
    orq.add_fault("trickle", seconds=0.3)
    with pytest.raises((requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)):
        http.post(f"{orq.url}/v2/contacts", json={"external_id": "t"}, timeout=(1, 0.1))
    # A short pause delivers the whole body, just slowly.
    orq.add_fault("trickle", seconds=0.001)
    answer = http.get(f"{orq.url}/v2/contacts/t", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["external_id"] == "t"


def test_close_fault_drops_the_connection(orq, http):
    orq.add_fault("close")
    with pytest.raises(requests.exceptions.ConnectionError):
        post(http, orq, {"external_id": "1"})
    assert orq.requests[-1].status == 0
    assert post(http, orq, {"external_id": "1"}).status_code == 200


def test_redirect_fault(orq, http):
    orq.add_fault("redirect", location="http://elsewhere.invalid/v2/contacts")
    answer = http.post(
        f"{orq.url}/v2/contacts", json={"external_id": "1"}, allow_redirects=False, timeout=5
    )
    assert answer.status_code == 302
    assert answer.headers["Location"] == "http://elsewhere.invalid/v2/contacts"


def test_outage(orq, http):
    orq.set_outage(503)
    assert post(http, orq, {"external_id": "1"}).status_code == 503
    assert http.get(f"{orq.url}/v2/contacts", timeout=5).status_code == 503
    orq.set_outage(None)
    assert post(http, orq, {"external_id": "1"}).status_code == 200


def test_latency(orq, http):
    orq.configure(latency=0.15)
    started = time.monotonic()
    http.get(f"{orq.url}/v2/contacts", timeout=5)
    assert time.monotonic() - started >= 0.15


def test_rate_limit_rolling_window(orq, http):
    orq.configure(rate_limit=3, rate_window=0.4)
    remaining = []
    for n in range(3):
        answer = post(http, orq, {"external_id": str(n)})
        assert answer.status_code == 200
        assert answer.headers["X-RateLimit-Limit"] == "3"
        remaining.append(answer.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]

    limited = post(http, orq, {"external_id": "x"})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert orq.contact("x") is None
    assert orq.stats()["rate_limited"] == 1

    time.sleep(0.45)
    assert post(http, orq, {"external_id": "x"}).status_code == 200


def test_many_concurrent_keep_alive_clients(orq):
    failures: list[int] = []

    def client(n: int) -> None:
        with requests.Session() as s:
            s.trust_env = False
            s.headers["Authorization"] = f"Bearer {KEY}"
            for i in range(10):
                code = s.post(
                    f"{orq.url}/v2/contacts", json={"external_id": f"{n}-{i}"}, timeout=5
                ).status_code
                if code != 200:
                    failures.append(code)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    stats = orq.stats()
    assert stats["requests"] == 200
    assert stats["by_status"] == {200: 200}
    assert len(orq.contacts()) == 200


# -- control API -----------------------------------------------------------------------------


def test_control_api_drives_the_server(orq, http):
    control = OrqServerControl(orq.url).wait_until_ready()
    control.set_outage(503)  # control calls themselves are not subject to the outage
    assert post(http, orq, {"external_id": "1"}).status_code == 503
    control.set_outage(None)

    config = control.configure(mode="create_only", rate_limit=100, rate_window=10)
    assert config["mode"] == "create_only"
    assert post(http, orq, {"external_id": "1"}).status_code == 201

    control.add_fault("status", status=502, method="GET", headers={"X-Test": "1"})
    answer = http.get(f"{orq.url}/v2/contacts/1", timeout=5)
    assert (answer.status_code, answer.headers["X-Test"]) == (502, "1")

    assert [c["external_id"] for c in control.contacts()] == ["1"]
    assert control.contact("1") == orq.contact("1")
    assert control.contact("nope") is None
    assert control.contacts("identities") == []

    recorded = control.requests
    assert [r.status for r in recorded] == [503, 201, 502]
    assert recorded[1].json() == {"external_id": "1"}
    assert len(control.api_requests(method="GET")) == 1
    stats = control.stats()
    assert stats["requests"] == 3
    assert stats["by_status"] == {201: 1, 502: 1, 503: 1}

    control.clear_requests()
    assert control.requests == []
    control.reset()
    assert control.contacts() == []
    assert control.config()["mode"] == "upsert"
    assert control.config()["rate_limit"] is None


def test_control_api_rejects_bad_config(orq):
    control = OrqServerControl(orq.url)
    with pytest.raises(Exception, match="400"):
        control.configure(mode="sometimes")  # type: ignore[arg-type]


def test_command_line_prints_url_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "django_orq_contacts.testing.server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("Fake Orq server listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[-1]
        assert OrqServerControl(url).wait_until_ready().stats()["requests"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
