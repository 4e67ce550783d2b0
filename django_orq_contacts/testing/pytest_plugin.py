"""pytest fixtures for projects using django-orq-contacts (loaded through the pytest11 entry
point, so installing the package is enough).

- ``orq_outbox``: the locmem backend, syncing right after commit without Celery; yields the
  list of calls (``OutboxEntry``) and offers ``orq_outbox.fail_next(error)`` via the module.
- ``orq_server``: a stand-in Orq server on 127.0.0.1 (fault injection included) with the
  HTTP backend pointed at it.

Both need pytest-django's ``settings`` fixture; nothing here runs unless a test asks for it.
"""

from __future__ import annotations

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
    yield orq_server_session
    orq_server_session.reset()
