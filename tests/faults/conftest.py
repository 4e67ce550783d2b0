"""Fixtures of the fault suite: real PostgreSQL, brokers and ``celery worker`` processes.

Workers are started per broker when a scenario first needs one and live for the package.
The suite's Redis broker is a database of its own (``ORQ_FAULTS_REDIS_BROKER``, db 13 by
default): its workers use a short visibility timeout, which on a shared database would hand
other runs' in-flight messages back to their queues, and the leak scan reads all of it.

Every scenario ends with the leak scan (``orq_server``'s teardown): the canary API key must
appear nowhere (worker logs, this process's logs, the broker, the cache, ContactSync rows,
the ContactSync admin), the canary emails nowhere but Orq.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import reverse

from django_orq_contacts import circuit, dispatch, pausing, ratelimit
from django_orq_contacts.backends import http as http_backend
from django_orq_contacts.models import ContactSync
from tests.celery_app import app as celery_app
from tests.e2e.harness import logging_to, redis_dump, require_redis

from .support import (
    FAULT_ARTIFACTS,
    Children,
    ServerSlot,
    Stack,
    cache_blob,
    new_worker,
    secrets_in,
    worker_env,
)
from .worker_settings import FAULTS_ORQ_CONTACTS

REDIS_BROKER = os.environ.get("ORQ_FAULTS_REDIS_BROKER", "redis://127.0.0.1:6379/13")
AMQP_BROKER = os.environ.get("ORQ_FAULTS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# A worker whose HTTP deadline is long, so only Celery's soft time limit can free it.
SLOW_OVERRIDES = {"TIMEOUT": (1, 60)}


class Stacks:
    """The brokers the suite drives, each with its worker, started on first use."""

    def __init__(self, base: dict[str, str], queue: str) -> None:
        self.base = base
        self.queue = queue
        self.started: dict[str, Stack] = {}

    def get(self, name: str) -> Stack:
        if name not in self.started:
            self.started[name] = self._make(name)
        stack = self.started[name]
        if not stack.worker.running:
            with stack.publishing():
                stack.purge()  # whatever an interrupted run or a killed test left behind
            stack.worker.start()
        return stack

    def _make(self, name: str) -> Stack:
        queue = self.queue if name == "redis" else f"{self.queue}-{name}"
        broker = AMQP_BROKER if name == "amqp" else REDIS_BROKER
        env = worker_env(queue=queue, broker_url=broker, **self.base)
        concurrency = 2
        if name == "slow":
            env["ORQ_FAULTS_OVERRIDES"] = json.dumps(SLOW_OVERRIDES)
            concurrency = 1  # so a pinned child would block everything after it
        return Stack(name, broker, queue, new_worker(queue, env, concurrency=concurrency), env)

    def running(self) -> list[Stack]:
        return [s for s in self.started.values() if s.worker.running]

    def stop_all(self) -> None:
        for stack in self.started.values():
            stack.worker.stop()


@pytest.fixture(scope="package")
def fault_slot() -> Iterator[ServerSlot]:
    slot = ServerSlot()
    yield slot
    slot.stop()


@pytest.fixture(scope="package")
def fault_stacks(
    django_db_setup: Any, django_db_blocker: Any, fault_slot: ServerSlot
) -> Iterator[Stacks]:
    if "postgresql" not in connection.settings_dict["ENGINE"]:
        raise RuntimeError("the fault suite needs PostgreSQL; unset ORQ_TEST_DB=sqlite")
    require_redis(REDIS_BROKER)
    with django_db_blocker.unblock():
        connection.ensure_connection()
    # The publisher thread and the helper threads resolve Celery's default app.
    celery_app.set_default()
    # One queue per run, so a worker orphaned by an interrupted run cannot take its tasks.
    queue = f"{django_settings.ORQ_CONTACTS['QUEUE']}-{os.getpid()}"
    base = {
        # The name pytest-django actually created, read after it did so.
        "database": str(connection.settings_dict["NAME"]),
        "server_url": fault_slot.url,
        "cache_prefix": str(django_settings.CACHES["default"].get("KEY_PREFIX", "")),
    }
    stacks = Stacks(base, queue)
    yield stacks
    # Before pytest-django drops the database the workers are connected to.
    stacks.stop_all()


@pytest.fixture(scope="package")
def fault_test_log() -> Iterator[Any]:
    """Everything this process logs during the suite, kept for the leak scan."""
    path = FAULT_ARTIFACTS / "test-process.log"
    with logging_to(path) as handler:
        yield path, handler


@pytest.fixture
def stack(request: pytest.FixtureRequest, fault_stacks: Stacks) -> Stack:
    """The broker + worker of this scenario: Redis unless parametrized with "amqp"."""
    return fault_stacks.get(getattr(request, "param", "redis"))


@pytest.fixture
def children(stack: Stack, tmp_path: Any) -> Children:
    """Other processes of the same site (web or cron), sharing the stack's broker."""
    return Children(stack.env, tmp_path)


@pytest.fixture
def orq_server(
    fault_slot: ServerSlot,
    fault_stacks: Stacks,
    stack: Stack,
    fault_test_log: Any,
    settings: Any,
    transactional_db: Any,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[ServerSlot]:
    """Overrides the suite-wide fixture: the server the workers call, publishing by thread.

    Ends every scenario with the leak scan.
    """
    caplog.set_level(logging.INFO)
    # The loggers that see requests and errors, at their most talkative.
    for name in ("django_orq_contacts", "urllib3", "django.request"):
        caplog.set_level(logging.DEBUG, logger=name)
    fault_slot.reset()
    settings.ORQ_CONTACTS = {
        **settings.ORQ_CONTACTS,
        **FAULTS_ORQ_CONTACTS,
        "BACKEND": "django_orq_contacts.backends.http.HttpBackend",
        "BASE_URL": fault_slot.url,
        "PUBLISH": "thread",
        "QUEUE": stack.queue,
    }
    ratelimit.reset()
    circuit.reset()
    http_backend._create_only.clear()
    marks = {s.name: (s, s.worker.mark()) for s in fault_stacks.running()}
    log_path, log_handler = fault_test_log
    test_log = (log_path, log_handler, log_path.stat().st_size)
    with stack.publishing():
        stack.purge()
        yield fault_slot
        dispatch.flush(10)
        fault_slot.clear_faults()
        fault_slot.configure(outage=None, latency=0.0, jitter=0.0)
        for other in fault_stacks.running():
            marks.setdefault(other.name, (other, 0))
        leaks = scan_for_leaks(marks, stack, caplog, test_log)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def scan_for_leaks(
    marks: dict[str, tuple[Stack, int]],
    stack: Stack,
    caplog: pytest.LogCaptureFixture,
    test_log: Any,
) -> list[str]:
    found: list[str] = []

    def check(where: str, blob: str | bytes, *, emails: bool = True) -> None:
        found.extend(f"{secret} in {where}" for secret in secrets_in(blob, emails=emails))

    for stack_, offset in marks.values():
        check(f"the {stack_.name} worker's log", stack_.worker.log_since(offset))
    # caplog keeps each phase apart; teardown is the current one.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    check("captured logs", "\n".join(formatter.format(r) for r in records))
    path, handler, offset = test_log
    handler.flush()
    with path.open("rb") as log:
        log.seek(offset)
        check("the test process's log file", log.read())
    check("the Redis broker database", redis_dump(REDIS_BROKER))
    prefix = str(django_settings.CACHES["default"].get("KEY_PREFIX", ""))
    check("the cache", cache_blob(django_settings.REDIS_URL, prefix))
    if not stack.is_redis:
        check(f"the {stack.name} queue", stack.messages_blob())
    rows = list(ContactSync.objects.values())
    check("ContactSync rows", json.dumps(rows, default=str))
    check("the ContactSync admin", admin_html(rows), emails=False)
    return found


def admin_html(rows: list[dict[str, Any]]) -> str:
    """The ContactSync changelist and the change page of each row with an error."""
    with pausing.paused(discard=True):  # the admin user needs no contact
        admin, _ = get_user_model().objects.get_or_create(
            username="leak-scan-admin", defaults={"is_staff": True, "is_superuser": True}
        )
    client = Client()
    client.force_login(admin)
    pages = [reverse("admin:django_orq_contacts_contactsync_changelist")]
    pages += [
        reverse("admin:django_orq_contacts_contactsync_change", args=[row["id"]])
        for row in rows
        if row["last_error"]
    ]
    html = []
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, f"{page} answered {response.status_code}"
        html.append(response.content.decode())
    return "\n".join(html)
