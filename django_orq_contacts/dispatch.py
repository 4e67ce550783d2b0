"""Hand work to Celery after commit: once per user per transaction, never blocking the request.

The ContactSync row written in the user's transaction is what guarantees delivery; the task
published here is only the fast path. So publishing happens on a background thread by
default: a request never waits on the broker, and when the broker is down the thread logs a
warning and the rows stay pending for the sweeper. ``PUBLISH = "inline"`` publishes in the
committing thread instead (for servers that run no threads, such as uWSGI without
``enable-threads``), bounded by ``PUBLISH_TIMEOUT``. ``PUBLISH =
"direct"`` skips Celery and syncs in the committing thread (tests, scripts, the demo).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from .conf import get_setting

logger = logging.getLogger(__name__)
_connections = threading.local()

Job = tuple[str, tuple[Any, ...], dict[str, Any]]
SYNC_TASK = "django_orq_contacts.sync_contact"
SYNC_MANY_TASK = "django_orq_contacts.sync_contacts"
DELETE_TASK = "django_orq_contacts.delete_contact"
# Queued publishes the background thread sends over one broker connection.
MAX_BATCH = 500
# Users per sync_contacts message: a burst of saves becomes a few messages, each small
# enough to finish quickly and to spread a burst over several workers (this many calls in a
# row at most); the publish cost per user is already a tenth of one message's.
USERS_PER_MESSAGE = 10
# Seconds the publisher thread waits after the first queued job for others to join it.
LINGER = 0.01


class _OnCommit:
    """One save's request to publish, registered with ``transaction.on_commit``.

    Every save registers its own callback, and the callbacks of one transaction share
    ``sent`` so each user is published once, by the first callback that runs. Letting Django
    keep one callback per save (rather than one batch per transaction) is what keeps this
    right when a savepoint rolls back (its callbacks go with it) and under
    ``captureOnCommitCallbacks`` in tests (a save inside the block is captured even if the
    same user was saved before it). Publishes are batched later, by the publisher thread.
    """

    __slots__ = ("job", "sent")

    def __init__(self, job: Job, sent: dict[tuple[str, Any], bool]) -> None:
        self.job = job
        self.sent = sent

    def __call__(self) -> None:
        key = (self.job[0], self.job[1][0])
        forced = bool(self.job[2].get("force"))
        # A forced request still goes out after a plain one for the same user.
        if key not in self.sent or (forced and not self.sent[key]):
            self.sent[key] = forced
            publish([self.job])


def _shared_sent(connection: Any) -> dict[tuple[str, Any], bool]:
    """The ``sent`` map of the transaction's callbacks (the newest one is usually last)."""
    for entry in reversed(connection.run_on_commit):
        if isinstance(entry[1], _OnCommit):
            sent: dict[tuple[str, Any], bool] = entry[1].sent
            return sent
    return {}


def schedule(task_name: str, arg: Any, *, using: str | None = None, **kwargs: Any) -> None:
    """Publish ``task_name(arg, **kwargs)`` after the current transaction commits.

    In autocommit mode there is nothing to wait for, or to coalesce: publish now.
    """
    job: Job = (task_name, (arg,), kwargs)
    alias = using or DEFAULT_DB_ALIAS
    connection = transaction.get_connection(alias)
    if not connection.in_atomic_block:
        publish([job])
        return
    transaction.on_commit(_OnCommit(job, _shared_sent(connection)), using=alias)


def publish(jobs: Iterable[Job]) -> None:
    jobs = list(jobs)
    if not jobs:
        return
    mode = get_setting("PUBLISH")
    if mode == "inline":
        send_now(jobs)
    elif mode == "direct":
        run_now(jobs)
    else:
        _publisher().submit(jobs)


def run_now(jobs: Iterable[Job]) -> None:
    """Do the work in this thread, without Celery (``PUBLISH = "direct"``: tests, scripts).

    Failures are recorded on the rows as usual and never raised into the committing code.
    """
    from . import sync

    for name, args, kwargs in jobs:
        try:
            if name == DELETE_TASK:
                sync.delete_contact(args[0])
            else:
                sync.sync_user(args[0], **kwargs)
        except Exception:
            logger.exception("Direct contact sync failed; the row stays pending")


def send_now(jobs: list[Job]) -> int:
    """Publish the jobs in this thread; return how many messages the broker accepted.

    A failure is logged, never raised: the rows are already pending, and the sweeper will
    pick them up once the broker is back.
    """
    from . import tasks

    jobs = coalesce(jobs)
    if not jobs:
        return 0
    sent = 0
    name = jobs[0][0] if jobs else ""
    try:
        connection = _connection_for(tasks.BY_NAME[name].app)
        for name, args, kwargs in jobs:
            tasks.BY_NAME[name].apply_async(
                args=args,
                kwargs=kwargs,
                queue=get_setting("QUEUE"),
                connection=connection,
                # One quick reconnect covers a connection the broker has just dropped;
                # more would only delay the warning.
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
            )
            sent += 1
    except Exception as exc:
        _discard_connection()
        logger.warning(
            "Could not publish %d message(s), from %s on (%s); their ContactSync rows stay "
            "pending for the sweeper.",
            len(jobs) - sent,
            name,
            type(exc).__name__,
        )
    return sent


def coalesce(jobs: list[Job]) -> list[Job]:
    """Turn runs of syncs published together into ``sync_contacts`` messages.

    Each message costs the publishing process a millisecond or so of CPU, which a loop of
    saves (a script, a data migration, ``--enqueue``) would otherwise pay per user. A lone
    sync stays a plain ``sync_contact``, so a web request's single save is unchanged. Only
    consecutive syncs of the same kind are joined, so messages keep the order of the jobs;
    a user listed twice in a run is sent once.
    """
    out: list[Job] = []
    run: dict[Any, None] = {}  # the current run's user pks, in order, once each
    run_forced = False

    def end_run() -> None:
        pks = list(run)
        run.clear()
        kwargs = {"force": True} if run_forced else {}
        if len(pks) == 1:
            out.append((SYNC_TASK, (pks[0],), kwargs))
            return
        for start in range(0, len(pks), USERS_PER_MESSAGE):
            out.append((SYNC_MANY_TASK, (pks[start : start + USERS_PER_MESSAGE],), kwargs))

    for name, args, kwargs in jobs:
        joins = name == SYNC_TASK and set(kwargs) <= {"force"}
        forced = bool(kwargs.get("force"))
        if run and not (joins and forced == run_forced):
            end_run()
        if joins:
            run_forced = forced
            run[args[0]] = None
        else:
            out.append((name, args, kwargs))
    if run:
        end_run()
    return out


def _connection_for(app: Any) -> Any:
    """This thread's bounded broker connection, kept between publishes.

    Opening one (and declaring the queue on it) per publish cost several times the publish
    itself. It is made anew after a fork, a failure, or a change of broker URL or timeout.
    """
    key = (
        os.getpid(),
        id(app),
        str(app.conf.broker_write_url or app.conf.broker_url),
        get_setting("PUBLISH_TIMEOUT"),
    )
    entry = getattr(_connections, "entry", None)
    if entry is not None and entry[0] == key:
        return entry[1]
    _discard_connection()
    connection = _bounded_connection(app)
    _connections.entry = (key, connection)
    return connection


def _discard_connection() -> None:
    entry = getattr(_connections, "entry", None)
    _connections.entry = None
    if entry is not None and entry[0][0] == os.getpid():
        with contextlib.suppress(Exception):
            entry[1].release()


def _bounded_connection(app: Any) -> Any:
    """A broker connection whose connect, reads and writes all time out.

    Celery's pooled connection only bounds connecting: a broker that accepts the connection
    and then never answers would block a publish forever (and, inline, the request).
    """
    timeout = float(get_setting("PUBLISH_TIMEOUT"))
    options = {
        "socket_timeout": timeout,  # redis
        "socket_connect_timeout": timeout,
        "read_timeout": timeout,  # amqp
        "write_timeout": timeout,
    }
    return app.connection_for_write(connect_timeout=timeout, transport_options=options)


class _Publisher:
    """A daemon thread that publishes queued jobs; made anew in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue[list[Job] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="orq-contacts-publisher", daemon=True)
        self.thread.start()

    def submit(self, jobs: list[Job]) -> None:
        self.queue.put(jobs)

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            # A moment's wait lets a burst of saves (a loop, a data migration) queue up
            # behind the first, to go out as a few sync_contacts messages rather than one
            # message per user; a lone save's task leaves a few milliseconds later.
            time.sleep(LINGER)
            # Whatever else is already queued goes out over the same connection.
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                send_now([job for jobs in batch if jobs for job in jobs])
            except Exception:  # the thread must survive anything, or publishing stops
                logger.exception("orq-contacts publisher failed")
            finally:
                for _ in batch:
                    self.queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is drained, at most ``timeout`` seconds."""
        done = threading.Event()

        def waiter() -> None:
            self.queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)


_lock = threading.Lock()
_current: _Publisher | None = None


def _publisher() -> _Publisher:
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = _Publisher()
        return _current


def flush(timeout: float = 5.0) -> bool:
    """Wait for queued publishes (tests, and process exit); True when all were handled."""
    publisher = _current
    if publisher is None or publisher.pid != os.getpid():
        return True
    return publisher.flush(timeout)


def _flush_at_exit() -> None:
    if _current is None:
        return
    # Short-lived processes (manage.py shell, scripts) would otherwise exit with jobs still
    # queued; they would not be lost (rows are pending) but would wait for the sweeper.
    flush(float(get_setting("PUBLISH_TIMEOUT")) + 1)


atexit.register(_flush_at_exit)
