"""Helpers for the end-to-end tests: a real ``celery worker`` process, bounded waits, Redis scans.

Nothing here sleeps as an assertion: every wait polls a condition with a deadline and fails
with a message saying what never happened.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from django_orq_contacts import dispatch
from django_orq_contacts.models import ContactSync

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"

# Celery's own INFO lines for a task's life in the worker.
_RECEIVED_RE = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] received")
# A task's return value: 'synced' for one user, {'synced': 24, ...} for sync_contacts.
_SUCCEEDED_RE = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] succeeded in [0-9.e-]+s: '?(.+?)'?$")
_RETRY_RE = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] retry")


def wait_for(
    predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Fails (AssertionError) after ``timeout`` seconds, naming ``what`` and the last value seen,
    so a stuck scenario reads as "X never happened" instead of a hang.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what or predicate!r}; last: {last!r}"
            )
        time.sleep(interval)


@dataclass(frozen=True)
class TaskEvent:
    kind: str  # "received", "succeeded" or "retry"
    name: str
    task_id: str
    outcome: str = ""


class CeleryWorker:
    """A ``celery -A tests.celery_app worker`` subprocess whose output goes to one log file.

    The log is appended to across restarts, so everything a session's workers printed can be
    scanned at the end; ``mark()`` returns an offset for looking only at what came after.
    """

    def __init__(
        self, *, queue: str, env: dict[str, str], log_path: Path, concurrency: int = 2
    ) -> None:
        self.queue = queue
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.node = f"{queue}-{os.getpid()}@%h"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-Q",
            self.queue,
            "-n",
            self.node,
            "--loglevel",
            "INFO",
        ]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 40.0) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.mark()
        with self.log_path.open("ab") as log:
            # A session of its own, so stop/kill reach the pool children too.
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            if not self.running:
                raise AssertionError(
                    f"celery worker exited with {self.process and self.process.returncode} "
                    f"while starting; its log ({self.log_path}):\n{self.log_since(offset)[-4000:]}"
                )
            return " ready." in self.log_since(offset)

        wait_for(
            ready, timeout, interval=0.1, what=f"the celery worker to be ready ({self.log_path})"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM): running tasks finish, unacked messages go back to Redis."""
        if self.process is None:
            return
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._reap_group()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crashed or OOM-killed host)."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def _reap_group(self) -> None:
        # Pool children normally exit with the main process; make sure none lingers holding
        # database connections (the test database is dropped at the end of the session).
        self._signal_group(signal.SIGKILL)

    # -- the log ---------------------------------------------------------------------------

    def mark(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def events(self, offset: int = 0) -> list[TaskEvent]:
        found: list[TaskEvent] = []
        for line in self.log_since(offset).splitlines():
            if m := _RECEIVED_RE.search(line):
                found.append(TaskEvent("received", m.group(1), m.group(2)))
            elif m := _SUCCEEDED_RE.search(line):
                found.append(TaskEvent("succeeded", m.group(1), m.group(2), m.group(3)))
            elif m := _RETRY_RE.search(line):
                found.append(TaskEvent("retry", m.group(1), m.group(2)))
        return found

    def received(self, offset: int = 0) -> list[TaskEvent]:
        return [e for e in self.events(offset) if e.kind == "received"]

    def outcomes(self, offset: int = 0) -> list[str]:
        return [e.outcome for e in self.events(offset) if e.kind == "succeeded"]


# -- this process's log ----------------------------------------------------------------------


@contextmanager
def logging_to(path: Path) -> Iterator[logging.Handler]:
    """Copy everything this process logs, at every level, to ``path`` (emptied first).

    The leak scans read the file: a secret must not reach this process's logs either.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


# -- the broker ------------------------------------------------------------------------------


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def require_redis(url: str) -> None:
    try:
        redis_client(url).ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis is not reachable at {url}: {exc}") from exc


def purge_queue(app: Any, queue: str) -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_purge(queue) or 0)


def queued_messages(url: str, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in ``queue`` (kombu's Redis layout: one JSON envelope per item)."""
    return [json.loads(raw) for raw in redis_client(url).lrange(queue, 0, -1)]


def unacked_calls(url: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """Task calls a worker holds without having acknowledged them (acks_late, ETA retries)."""
    entries = redis_client(url).hvals("unacked")
    return [task_call(json.loads(raw)[0]) for raw in entries]


def synced_users(calls: list[tuple[str, list[Any], dict[str, Any]]]) -> list[Any]:
    """The user pks that ``sync_contact`` and ``sync_contacts`` calls name, in order.

    Saves made close together may travel as one ``sync_contacts`` message (the publisher
    thread joins what queues up within a few milliseconds), so tests count users, not
    messages.
    """
    pks: list[Any] = []
    for name, args, _kwargs in calls:
        if name == dispatch.SYNC_TASK:
            pks.append(args[0])
        elif name == dispatch.SYNC_MANY_TASK:
            pks.extend(args[0])
    return pks


def task_call(message: dict[str, Any]) -> tuple[str, list[Any], dict[str, Any]]:
    """(task name, args, kwargs) of a Celery protocol-2 message as stored in Redis."""
    body = json.loads(base64.b64decode(message["body"]))
    args, kwargs, _embed = body
    return message["headers"]["task"], args, kwargs


def redis_dump(url: str) -> bytes:
    """Every key and value of the Redis database, whatever its type, as one searchable blob.

    Message bodies are base64 inside kombu's envelopes, so decoded forms are appended too:
    a secret must not hide behind an encoding.
    """
    client = redis_client(url)
    parts: list[bytes] = []
    for key in client.scan_iter(count=500):
        parts.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            parts.append(client.get(key) or b"")
        elif kind == "list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                parts.extend((field, value))
        elif kind == "set":
            parts.extend(client.smembers(key))
        elif kind == "zset":
            parts.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
    return b"\n".join(parts + [_decoded_bodies(p) for p in parts])


def _decoded_bodies(blob: bytes) -> bytes:
    out: list[bytes] = []
    for match in re.finditer(rb'"body": ?"([A-Za-z0-9+/=]+)"', blob):
        try:
            out.append(base64.b64decode(match.group(1)))
        except ValueError:
            continue
    return b"\n".join(out)


@contextmanager
def unused_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class FrozenBroker:
    """A port that accepts TCP connections and never answers: a hung broker."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]

    def has_client(self) -> bool:
        # A connection waiting in the accept queue makes the listener readable.
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self) -> None:
        # Closing the listener resets the connections queued on it, which frees a client
        # stuck reading from it.
        self.sock.close()


@contextmanager
def frozen_broker() -> Iterator[FrozenBroker]:
    broker = FrozenBroker()
    try:
        yield broker
    finally:
        broker.close()


@contextmanager
def broker_at(app: Any, url: str) -> Iterator[None]:
    """Point the test process's Celery app at another broker, then back.

    Only this process changes: the worker and the shared Redis are left alone. The app's
    cached pools are dropped both ways so the next publish builds them for the current URL
    (kombu keeps one pool per broker URL, so the healthy one is found again afterwards).
    """
    # Celery 5.3 resolves broker_write_url once, so it must be moved along explicitly.
    names = ("broker_url", "broker_write_url", "broker_read_url")
    previous = {name: app.conf.get(name) for name in names}

    def reset_pools() -> None:
        app._pool = None
        app.amqp._producer_pool = None

    app.conf.update(dict.fromkeys(names, url))
    reset_pools()
    try:
        yield
    finally:
        app.conf.update(previous)
        reset_pools()


# -- the database ----------------------------------------------------------------------------


def row_of(user: Any) -> ContactSync | None:
    return ContactSync.objects.filter(user_id=user.pk).first()


def wait_for_row(user: Any, status: str, timeout: float = 15.0) -> ContactSync:
    def reached() -> ContactSync | None:
        row = row_of(user)
        return row if row is not None and row.status == status else None

    return wait_for(reached, timeout, what=f"user {user.pk}'s ContactSync to be {status}")
