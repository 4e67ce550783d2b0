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
import logging
import os
import queue
import threading
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from .conf import get_setting

logger = logging.getLogger(__name__)

Job = tuple[str, tuple[Any, ...], dict[str, Any]]
SYNC_TASK = "django_orq_contacts.sync_contact"
DELETE_TASK = "django_orq_contacts.delete_contact"


class _Batch:
    """What one transaction level asks to publish, deduplicated by user.

    Each savepoint level gets its own batch, registered inside it, so rolling the savepoint
    back drops its jobs with it. The batches of one transaction share ``sent`` so a user
    saved at several levels is still published once.
    """

    def __init__(self, sent: dict[tuple[str, Any], bool]) -> None:
        self.jobs: dict[tuple[str, Any], Job] = {}
        self.sent = sent

    def add(self, job: Job) -> None:
        key = (job[0], job[1][0])
        previous = self.jobs.get(key)
        # A forced request wins over a plain one for the same user.
        if previous is None or job[2].get("force"):
            self.jobs[key] = job

    def __call__(self) -> None:
        jobs = []
        for key, job in self.jobs.items():
            forced = bool(job[2].get("force"))
            if key not in self.sent or (forced and not self.sent[key]):
                self.sent[key] = forced
                jobs.append(job)
        publish(jobs)


def _batch_for(using: str) -> _Batch | None:
    """The batch registered on this transaction, registering one if needed.

    None in autocommit mode, where there is nothing to coalesce. Looking the batch up in the
    connection's on-commit list (rather than caching it) keeps it right across savepoint
    rollbacks, which drop the callbacks registered inside them; only a batch registered at
    the current savepoint level is reused, or a rolled-back save would stay in an outer one.
    """
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block:
        return None
    level = set(connection.savepoint_ids)
    sent: dict[tuple[str, Any], bool] = {}
    for entry in connection.run_on_commit:
        if isinstance(entry[1], _Batch):
            if entry[0] == level:
                return entry[1]
            sent = entry[1].sent
    batch = _Batch(sent)
    transaction.on_commit(batch, using=using)
    return batch


def schedule(task_name: str, arg: Any, *, using: str | None = None, **kwargs: Any) -> None:
    """Publish ``task_name(arg, **kwargs)`` after the current transaction commits."""
    job: Job = (task_name, (arg,), kwargs)
    batch = _batch_for(using or DEFAULT_DB_ALIAS)
    if batch is None:
        publish([job])
    else:
        batch.add(job)


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
    """Publish the jobs in this thread; return how many were accepted by the broker.

    A failure is logged, never raised: the rows are already pending, and the sweeper will
    pick them up once the broker is back.
    """
    from . import tasks

    sent = 0
    name = jobs[0][0] if jobs else ""
    try:
        with _bounded_connection(tasks.BY_NAME[name].app) as connection:
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
        logger.warning(
            "Could not publish %s for %d job(s) (%s); their ContactSync rows stay pending "
            "for the sweeper.",
            name,
            len(jobs) - sent,
            type(exc).__name__,
        )
    return sent


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
            jobs = self.queue.get()
            try:
                if jobs is not None:
                    send_now(jobs)
            except Exception:  # the thread must survive anything, or publishing stops
                logger.exception("orq-contacts publisher failed")
            finally:
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
