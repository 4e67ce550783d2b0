"""End-to-end fixtures: the stand-in Orq server in this process and a real Celery worker.

The worker is a separate ``celery -A tests.celery_app worker`` process pointed at the very
database pytest-django created, at the fake server's URL and at this run's queue; it reaches
the fake server over HTTP like it would reach Orq. Missing PostgreSQL, Redis or a worker that
does not come up fail the session: these tests are only worth something against real parts.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import current_app
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection

from django_orq_contacts import circuit, dispatch, ratelimit
from django_orq_contacts.testing.server import FakeOrqServer
from tests.celery_app import app as celery_app  # the test process publishes with this app
from tests.settings import CANARY_API_KEY

from .harness import ARTIFACTS, CeleryWorker, logging_to, purge_queue, require_redis, wait_for

User = get_user_model()


def _app_seen_from_another_thread() -> Any:
    # The default publisher runs in its own thread, where shared_task resolves the *default*
    # app, not the one current in the main thread.
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(current_app._get_current_object()))
    thread.start()
    thread.join()
    return seen[0]


@pytest.fixture(scope="session")
def e2e_queue() -> str:
    # One queue per run: a worker orphaned by an interrupted run must not take this run's
    # tasks (it talks to a stand-in server that is gone).
    return f"{django_settings.ORQ_CONTACTS['QUEUE']}-{os.getpid()}"


@pytest.fixture(scope="session")
def e2e_server() -> Iterator[FakeOrqServer]:
    # The worker authenticates with the canary key from tests.settings: the server checks it.
    server = FakeOrqServer(api_key=CANARY_API_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def e2e_test_log() -> Iterator[Any]:
    """Everything this process logs, kept under artifacts/ for the leak scan."""
    path = ARTIFACTS / "test-process.log"
    with logging_to(path):
        yield path


@pytest.fixture(scope="session")
def e2e_worker(
    django_db_setup: Any, django_db_blocker: Any, e2e_server: FakeOrqServer, e2e_queue: str
) -> Iterator[CeleryWorker]:
    database = connection.settings_dict
    if "postgresql" not in database["ENGINE"]:
        raise RuntimeError("the end-to-end tests need PostgreSQL; unset ORQ_TEST_DB=sqlite")
    broker_url = str(django_settings.CELERY_BROKER_URL)
    require_redis(broker_url)
    if _app_seen_from_another_thread() is not celery_app:
        raise RuntimeError("tests.celery_app is not Celery's default app in this process")
    with django_db_blocker.unblock():
        connection.ensure_connection()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        # The name pytest-django actually created (test_ + ...), read after it did so.
        "ORQ_TEST_DB_NAME": str(database["NAME"]),
        "ORQ_TEST_BASE_URL": e2e_server.url,
        "ORQ_TEST_QUEUE": e2e_queue,
        "ORQ_TEST_BROKER_URL": broker_url,
        "ORQ_TEST_PUBLISH": "thread",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ORQ_TEST_DB", None)
    log_path = ARTIFACTS / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_bytes(b"")
    # Leftovers of an interrupted earlier run would otherwise be the first thing it runs.
    purge_queue(celery_app, e2e_queue)
    worker = CeleryWorker(queue=e2e_queue, env=env, log_path=log_path)
    worker.start()
    yield worker
    # Before pytest-django drops the database the worker is connected to.
    worker.stop()


@pytest.fixture
def orq_server(
    e2e_server: FakeOrqServer,
    e2e_worker: CeleryWorker,
    e2e_test_log: Any,
    e2e_queue: str,
    settings: Any,
) -> Iterator[FakeOrqServer]:
    """Overrides the suite-wide fixture: the server the worker talks to, publishing by thread."""
    if not e2e_worker.running:
        e2e_worker.start()  # a test that stopped or killed it failed before restarting it
    purge_queue(celery_app, e2e_queue)
    e2e_server.reset()
    settings.ORQ_CONTACTS = {
        **settings.ORQ_CONTACTS,
        "BACKEND": "django_orq_contacts.backends.http.HttpBackend",
        "BASE_URL": e2e_server.url,
        "API_KEY": CANARY_API_KEY,
        "PUBLISH": "thread",
        "QUEUE": e2e_queue,
    }
    # Pauses and breaker state live in the shared cache: the worker sees these resets too.
    ratelimit.reset()
    circuit.reset()
    yield e2e_server
    dispatch.flush(5)
    e2e_server.clear_faults()


@pytest.fixture
def settle(orq_server: FakeOrqServer) -> Callable[[], Any]:
    """A barrier: once a fresh user's contact exists, the worker has received every task
    published before it (one publisher thread, one FIFO queue)."""

    def settle() -> Any:
        sentinel = User.objects.create_user(f"sentinel-{uuid.uuid4().hex[:10]}")
        wait_for(lambda: orq_server.contact(str(sentinel.pk)), what="the sentinel's contact")
        return sentinel

    return settle
