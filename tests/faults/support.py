"""What the fault scenarios share: a broker + worker "stack", convergence, the leak scan.

The end-to-end harness (tests/e2e/harness.py) provides the worker process, bounded waits and
the Redis readers; this module adds what only fault injection needs: a worker per broker
with the short clocks of ``worker_settings``, pool children to SIGKILL, helper processes,
the convergence check and the search for secrets.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from kombu import Connection

from django_orq_contacts import payload, tasks
from django_orq_contacts.models import ContactSync
from django_orq_contacts.testing.server import FakeOrqServer
from tests.celery_app import app as celery_app
from tests.e2e.harness import (
    ARTIFACTS,
    REPO_ROOT,
    CeleryWorker,
    broker_at,
    redis_client,
    wait_for,
)
from tests.settings import CANARY_API_KEY

FAULT_ARTIFACTS = ARTIFACTS.parent / "faults"
SYNC = "django_orq_contacts.sync_contact"
# Canary emails carry this run's token; usernames never do, so finding the token anywhere
# means an email got there.
TOKEN = uuid.uuid4().hex[:12]


def canary_email(name: str) -> str:
    return f"{name}.{TOKEN}@leak-canary.example"


def make_user(username: str, **fields: Any) -> Any:
    fields.setdefault("email", canary_email(username))
    return get_user_model().objects.create_user(username, **fields)


# -- a broker with its worker ----------------------------------------------------------------


@dataclass
class Stack:
    """One broker, the queue this suite uses on it, and the worker consuming it."""

    name: str
    broker_url: str
    queue: str
    worker: CeleryWorker
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_redis(self) -> bool:
        return self.broker_url.startswith("redis")

    @contextmanager
    def publishing(self) -> Iterator[None]:
        """This process's Celery app publishes to this stack's broker meanwhile."""
        with broker_at(celery_app, self.broker_url):
            yield

    def purge(self) -> None:
        conn = celery_app.connection_for_write()
        # RabbitMQ: a queue no worker has declared yet has nothing to purge.
        with conn, suppress(*conn.channel_errors):
            conn.default_channel.queue_purge(self.queue)

    def sweep(self) -> None:
        """What celery beat sends on schedule: the sweeper task, run by the worker."""
        tasks.sync_pending.apply_async(queue=self.queue)

    def sweep_until(self, done: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """Send the sweeper every second (a fast beat) until ``done()`` holds."""
        last = [0.0]

        def check() -> Any:
            result = done()
            if not result and time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                self.sweep()
            return result

        try:
            return wait_for(check, timeout, interval=0.1, what=what or "the sweeper's work")
        except AssertionError as exc:
            rows = list(ContactSync.objects.values())
            raise AssertionError(f"{exc}\nContactSync rows: {rows}") from None

    def calls(self) -> list[tuple[str, list[Any], dict[str, Any]]]:
        """(task, args, kwargs) of the messages waiting in the queue, left in place."""
        return [call for call, _ in self._messages()]

    def messages_blob(self) -> bytes:
        """The waiting messages as stored, bodies decoded: what the leak scan searches."""
        return b"\n".join(raw for _, raw in self._messages())

    def _messages(self) -> list[tuple[tuple[str, list[Any], dict[str, Any]], bytes]]:
        found = []
        if self.is_redis:
            for raw in redis_client(self.broker_url).lrange(self.queue, 0, -1):
                envelope = json.loads(raw)
                body = base64.b64decode(envelope["body"])
                found.append((_call(envelope["headers"], body), raw + b"\n" + body))
            return found
        with Connection(self.broker_url, connect_timeout=5) as conn:
            channel = conn.channel()
            while (message := channel.basic_get(self.queue, no_ack=False)) is not None:
                body = message.body
                body = body if isinstance(body, bytes) else str(body).encode()
                raw = json.dumps(message.headers, default=repr).encode() + b"\n" + body
                found.append((_call(message.headers, body), raw))
            # Closing the channel without acking hands every message back to the queue.
            channel.close()
        return found


def _call(headers: dict[str, Any], body: bytes) -> tuple[str, list[Any], dict[str, Any]]:
    args, kwargs, _embed = json.loads(body)
    return str(headers["task"]), list(args), dict(kwargs)


def worker_env(
    *, database: str, server_url: str, queue: str, broker_url: str, cache_prefix: str
) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.faults.worker_settings",
        "ORQ_TEST_DB_NAME": database,
        "ORQ_TEST_BASE_URL": server_url,
        "ORQ_TEST_QUEUE": queue,
        "ORQ_TEST_BROKER_URL": broker_url,
        "ORQ_TEST_PUBLISH": "thread",
        "ORQ_FAULTS_CACHE_PREFIX": cache_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ORQ_TEST_DB", None)
    return env


def new_worker(queue: str, env: dict[str, str], *, concurrency: int = 2) -> CeleryWorker:
    FAULT_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = FAULT_ARTIFACTS / f"worker-{queue}.log"
    log_path.write_bytes(b"")
    return CeleryWorker(queue=queue, env=env, log_path=log_path, concurrency=concurrency)


def pool_children(pid: int) -> list[int]:
    """The prefork pool processes of a worker's main process (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            # The fields after the parenthesised command name: state, ppid, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def kill_pool_children(worker: CeleryWorker) -> list[int]:
    """SIGKILL every pool child (an OOM kill); the main process stays and forks new ones."""
    assert worker.process is not None
    children = pool_children(worker.process.pid)
    assert children, "the worker has no pool children to kill"
    for pid in children:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return children


# -- helper processes ------------------------------------------------------------------------


class Children:
    """``python -m tests.faults.child ...`` processes sharing the worker's environment."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.child", *args],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        process = self.start(*args)
        out, err = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def together(self, *commands: tuple[str, ...], timeout: float = 60.0) -> list[Any]:
        """Start the commands, release them at once when all are ready, return their JSON."""
        barrier = self.workdir / f"barrier-{uuid.uuid4().hex[:8]}"
        barrier.mkdir()
        processes = [self.start(*cmd, "--barrier", str(barrier)) for cmd in commands]
        wait_for(
            lambda: (
                len(list(barrier.glob("ready-*"))) == len(processes)
                or any(p.poll() is not None for p in processes)
            ),
            timeout=30,
            what="the helper processes to be ready",
        )
        (barrier / "go").touch()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, f"helper failed ({process.returncode}):\n{err[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results


# -- convergence -----------------------------------------------------------------------------


def mismatches(server: FakeOrqServer) -> list[str]:
    """How the fake Orq differs from what the database says it should hold (empty: none).

    Every user that should sync has exactly one contact equal to ``payload.build(user)``;
    no other contact exists.
    """
    problems = []
    contacts = server.contacts()
    by_external: dict[str, list[dict[str, Any]]] = {}
    for contact in contacts:
        by_external.setdefault(contact["external_id"], []).append(contact)
    expected = {}
    for user in get_user_model().objects.order_by("pk"):
        if payload.should_sync(user):
            body = payload.build(user)
            expected[body["external_id"]] = body
    for external_id, body in expected.items():
        found = by_external.get(external_id, [])
        if len(found) != 1:
            problems.append(f"user {external_id}: {len(found)} contacts")
            continue
        remote = {name: found[0].get(name) for name in body}
        if remote != body:
            problems.append(f"user {external_id}: remote {remote} != database {body}")
    for external_id in sorted(set(by_external) - set(expected)):
        problems.append(f"contact {external_id} has no user that should sync")
    return problems


def converged(server: FakeOrqServer) -> bool:
    return not mismatches(server)


def assert_converged(server: FakeOrqServer, timeout: float = 20.0) -> None:
    """Wait until the fake Orq matches the database, then check every row is settled."""
    try:
        wait_for(lambda: converged(server), timeout, interval=0.1, what="convergence")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(mismatches(server))) from None
    wait_for(all_rows_synced, timeout, what="every ContactSync row to be synced")


def all_rows_synced() -> bool:
    return not ContactSync.objects.exclude(status=ContactSync.Status.SYNCED).exists()


def requests_for(server: FakeOrqServer, user_pk: Any) -> list[Any]:
    """The API requests about one user's contact (by path or by the body's external_id)."""
    external_id = str(user_pk)
    found = []
    for request in server.api_requests():
        in_path = request.path.split("?")[0].rstrip("/").endswith(f"/{external_id}")
        in_body = False
        if request.body:
            with suppress(ValueError):
                in_body = request.json().get("external_id") == external_id
        if in_path or in_body:
            found.append(request)
    return found


# -- the leak scan ---------------------------------------------------------------------------


def secrets_in(blob: str | bytes, *, emails: bool = True) -> list[str]:
    """Which secrets ``blob`` holds: the API key always, the canary emails if asked."""
    data = blob if isinstance(blob, bytes) else blob.encode("utf-8", errors="replace")
    lowered = data.lower()
    found = []
    if CANARY_API_KEY.lower().encode() in lowered:
        found.append("the API key")
    if emails and TOKEN.encode() in lowered:
        found.append("a canary email")
    return found


def cache_blob(url: str, prefix: str) -> bytes:
    """The keys and values this suite's processes put in the cache (breaker, rate limiter)."""
    client = redis_client(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    return b"\n".join(keys + [client.get(key) or b"" for key in keys])


class ServerSlot:
    """The fake Orq server, which a scenario may take down and bring back on the same port.

    Attribute access goes to the server currently up, so tests use the slot like a server.
    """

    def __init__(self) -> None:
        self.server = FakeOrqServer(api_key=CANARY_API_KEY).start()
        self.port = self.server.port
        self.url = self.server.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    @contextmanager
    def down(self) -> Iterator[None]:
        """Nothing listens on the port meanwhile: every call is refused."""
        # Handler threads of kept-alive connections outlive the listener: make them hang up
        # on their next request, so no worker keeps talking to the "stopped" server.
        self.server.add_fault("close", times=10_000)
        self.server.stop()
        try:
            yield
        finally:
            self.server = FakeOrqServer(port=self.port, api_key=CANARY_API_KEY).start()

    def stop(self) -> None:
        self.server.stop()
