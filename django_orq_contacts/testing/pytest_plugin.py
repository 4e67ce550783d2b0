"""pytest fixtures for projects using django-orq-contacts (loaded through the pytest11 entry
point, so installing the package is enough).

- ``orq_outbox``: the locmem backend, syncing right after commit without Celery; yields the
  list of calls (``OutboxEntry``) and offers ``orq_outbox.fail_next(error)`` via the module.
- ``orq_server``: a stand-in Orq server on 127.0.0.1 (fault injection included) with the
  HTTP backend pointed at it.

Both need pytest-django's ``settings`` fixture; nothing here runs unless a test asks for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from .server import FakeOrqServer

TEST_API_KEY = "test-orq-api-key"


def _override(settings: Any, **values: Any) -> None:
    current = dict(getattr(settings, "ORQ_CONTACTS", {}) or {})
    current.update(values)
    settings.ORQ_CONTACTS = current


@pytest.fixture
def orq_outbox(settings: Any) -> Iterator[list[Any]]:
    from ..backends import locmem

    _override(
        settings, BACKEND="django_orq_contacts.backends.locmem.LocmemBackend", PUBLISH="direct"
    )
    locmem.reset()
    yield locmem.get_outbox()
    locmem.reset()


@pytest.fixture(scope="session")
def orq_server_session() -> Iterator[FakeOrqServer]:
    server = FakeOrqServer(api_key=TEST_API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def orq_server(orq_server_session: FakeOrqServer, settings: Any) -> Iterator[FakeOrqServer]:
    from .. import circuit, ratelimit
    from ..backends import http as http_backend

    orq_server_session.reset()
    _override(
        settings,
        BACKEND="django_orq_contacts.backends.http.HttpBackend",
        BASE_URL=orq_server_session.url,
        API_KEY=TEST_API_KEY,
    )
    # Shared state lives in the cache: a breaker opened or a pause set by one test must not
    # leak into the next.
    ratelimit.reset()
    circuit.reset()
    # The HTTP backend remembers which servers answered "duplicate" (create-only); the
    # session server goes back to upsert mode, so that memory must go too.
    http_backend._create_only.clear()
    yield orq_server_session
    # A request the client gave up on (a delay or trickle fault) is still being served; it
    # would land in the next test's store and request log, so let it finish (bounded).
    deadline = time.monotonic() + 5.0
    while orq_server_session.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    orq_server_session.reset()
