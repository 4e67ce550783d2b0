"""Sync many users: keyset pagination, an in-memory "unchanged" pre-check, and worker threads.

Memory stays flat: users are read in pk order, ``batch_size`` at a time, with only the
fields the payload needs. Users whose last synced hash still matches (and whose row has no
newer save) are counted without a single write, so a rerun over an unchanged site costs
one read per batch and no calls. The others go through ``sync.sync_user``, the same path
the Celery task takes.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from . import payload as payloads
from . import pipeline, state, sync
from .backends import get_backend
from .batchwrite import Recorder
from .conf import get_setting
from .exceptions import PayloadError
from .models import ContactSync
from .redaction import redact

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class BulkReport:
    counts: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    started: float = field(default_factory=time.monotonic)
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False

    def add(self, result: sync.SyncResult) -> None:
        outcome = sync.FAILED if result.failed else result.outcome
        self.counts[outcome] += 1
        self.calls += result.calls
        if result.failed and len(self.errors) < 20:
            self.errors.append(f"user {result.user_pk}: {result.error}")

    @property
    def failed(self) -> int:
        return self.counts[sync.FAILED]

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def users_queryset(
    user_pks: Iterable[Any] | None = None, since: dt.datetime | None = None
) -> QuerySet[Model]:
    user_model = get_user_model()
    queryset: QuerySet[Model] = user_model._default_manager.all()
    if user_pks:
        queryset = queryset.filter(pk__in=list(user_pks))
    if since is not None:
        # Users have no "modified" column in general; a save marks the ContactSync row, and
        # a user new since then has no row yet or a recent date_joined.
        changed = Q(orq_contact_sync__updated_at__gte=since)
        field_names = {f.name for f in user_model._meta.get_fields()}
        if "date_joined" in field_names:
            changed |= Q(date_joined__gte=since)
        queryset = queryset.filter(changed)
    return queryset


def payload_fields(user_model: type[Model]) -> list[str] | None:
    """The columns the default payload reads; None (all) with a custom builder."""
    if get_setting("CONTACT_BUILDER") is not None:
        return None
    names = {f.attname for f in user_model._meta.concrete_fields}
    email_field = user_model.get_email_field_name()  # type: ignore[attr-defined]
    required = {user_model._meta.pk.attname, getattr(user_model, "USERNAME_FIELD", ""), email_field}
    external_id = get_setting("EXTERNAL_ID")
    if isinstance(external_id, str) and "." not in external_id:
        required.add(external_id)
    if not required <= names:
        return None  # a property or a callable may read anything: load whole rows
    return sorted(required | ({"first_name", "last_name"} & names))


def iter_batches(queryset: QuerySet[Model], batch_size: int) -> Iterator[list[Model]]:
    """Keyset pagination by pk: no OFFSET, no server-side cursor, constant memory."""
    fields = payload_fields(queryset.model)
    base = queryset.order_by("pk")
    if fields is not None:
        base = base.only(*fields)
    last: Any = None
    while True:
        page = base if last is None else base.filter(pk__gt=last)
        batch = list(page[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def load_rows(users: list[Model]) -> dict[Any, ContactSync]:
    """The batch's ContactSync rows by user pk: the columns the unchanged check reads."""
    return {
        row.user_id: row
        for row in ContactSync.objects.filter(user_id__in=[u.pk for u in users]).only(
            "user_id", "status", "operation", "payload_hash", "version", "synced_version"
        )
    }


def unchanged_in_memory(
    users: list[Model], rows: dict[Any, ContactSync], force: bool
) -> tuple[list[Model], list[Any]]:
    """Split a batch into (users that need work, pks known unchanged)."""
    if force:
        return users, []
    resource = str(get_setting("RESOURCE"))
    todo: list[Model] = []
    unchanged: list[Any] = []
    for user in users:
        row = rows.get(user.pk)
        if (
            row is None
            or row.status != ContactSync.Status.SYNCED
            or row.version != row.synced_version
        ):
            todo.append(user)
            continue
        try:
            if not payloads.should_sync(user):
                same = row.operation == ContactSync.Operation.DELETE
            else:
                digest = payloads.payload_hash(payloads.build(user), resource)
                same = row.operation == ContactSync.Operation.UPSERT and row.payload_hash == digest
        except PayloadError:
            same = False
        if same:
            unchanged.append(user.pk)
        else:
            todo.append(user)
    return todo, unchanged


def preview(
    users: list[Model], rows: dict[Any, ContactSync], force: bool
) -> Iterator[sync.SyncResult]:
    """``--dry-run``: what a sync would do, from the rows already read; no call, no write."""
    resource = str(get_setting("RESOURCE"))
    for user in users:
        if not payloads.should_sync(user):
            yield sync.SyncResult(sync.SKIPPED, user.pk)
            continue
        try:
            digest = payloads.payload_hash(payloads.build(user), resource)
        except PayloadError as exc:
            yield sync.SyncResult(sync.FAILED, user.pk, error=redact(str(exc)))
            continue
        row = rows.get(user.pk)
        same = not force and row is not None and sync.is_unchanged(row, digest)
        yield sync.SyncResult(sync.UNCHANGED if same else sync.WOULD_SYNC, user.pk)


def drop_broken_connections() -> None:
    """Reconnect only after a database error broke the connection (a server restart).

    Not ``close_old_connections``: with the default ``CONN_MAX_AGE = 0`` it closes the
    connection after every user, and a new PostgreSQL connection per user costs more than
    the sync itself.
    """
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or not connection.errors_occurred:
            continue
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()


def run_parallel(
    work: Callable[[Any], Iterable[sync.SyncResult]],
    items: Iterable[Any],
    concurrency: int,
    report: BulkReport,
    progress: Progress | None,
    abandon: Callable[[Any], None] | None = None,
    finish: Callable[[], Iterable[sync.SyncResult]] | None = None,
) -> None:
    """Run ``work`` over ``items`` on ``concurrency`` threads, each with its own session and
    database connection; Ctrl-C stops feeding new items and lets queued ones finish.

    ``work`` returns the results it settled (a deferred write may settle several at once,
    ``finish`` the rest at the end); ``abandon`` is given the item a Ctrl-C caught on its
    way into the queue.
    """
    todo: queue.Queue[Any] = queue.Queue(maxsize=concurrency * 2)
    lock = threading.Lock()
    stop = object()

    def worker() -> None:
        try:
            while (item := todo.get()) is not stop:
                drop_broken_connections()
                try:
                    results = list(work(item))
                except Exception as exc:
                    # One broken user (or a database hiccup) must not silently take a
                    # thread away and leave the feeder waiting on a full queue.
                    logger.exception("Bulk sync of one item failed")
                    results = [sync.SyncResult(sync.FAILED, error=redact(repr(exc)))]
                add(results)
        finally:
            connections.close_all()

    def add(results: list[sync.SyncResult]) -> None:
        with lock:
            for result in results:
                report.add(result)
            if progress and results:
                progress(len(results))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for thread in threads:
        thread.start()
    item: Any = stop
    try:
        for item in items:
            todo.put(item)
            item = stop
    except KeyboardInterrupt:
        report.interrupted = True
        if abandon is not None and item is not stop:
            abandon(item)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a generator's own cleanup (releasing leases) runs now, not at GC
        for _ in threads:
            todo.put(stop)
        for thread in threads:
            thread.join()
        if finish is not None:
            add(list(finish()))


def sync_all(
    queryset: QuerySet[Model],
    *,
    force: bool = False,
    dry_run: bool = False,
    enqueue: bool = False,
    batch_size: int = 500,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> BulkReport:
    """Sync every user of ``queryset`` that needs it (the command's default mode)."""
    report = BulkReport()
    fields = payload_fields(queryset.model)
    fresh = queryset.model._default_manager.all()
    if fields is not None:
        fresh = fresh.only(*fields)
    chunk_size = max(8, concurrency * 2)

    def count(outcome: str, n: int) -> None:
        report.counts[outcome] += n
        if progress and n:
            progress(n)

    def jobs() -> Iterator[pipeline.Job]:
        for batch in iter_batches(queryset, batch_size):
            rows = load_rows(batch)
            todo, unchanged = unchanged_in_memory(batch, rows, force)
            count(sync.UNCHANGED, len(unchanged))
            if dry_run:
                for result in preview(todo, rows, force):
                    report.add(result)
                    if progress:
                        progress(1)
                continue
            if enqueue:
                count("queued", sync.request_sync([u.pk for u in todo], force=force))
                continue
            pipeline.ensure_rows(todo, rows)
            pks = [u.pk for u in todo]
            for start in range(0, len(pks), chunk_size):
                chunk = pks[start : start + chunk_size]
                claimed: list[pipeline.Job] = []
                handed = 0
                try:
                    claimed = pipeline.claim_chunk(chunk, fresh, force)
                    pipeline.save_external_ids(claimed)
                    for job in claimed:
                        yield job
                        handed += 1
                finally:
                    # Ctrl-C (or an error) between claiming and queueing: free those rows
                    # now, so a rerun does not find them leased for LEASE_SECONDS.
                    pipeline.release(claimed[handed:])

    backend = get_backend()
    recorder = Recorder(backend, size=max(1, concurrency))
    run_parallel(
        lambda job: pipeline.run(job, backend, recorder),
        jobs(),
        concurrency,
        report,
        progress,
        abandon=lambda job: pipeline.release([job]),
        finish=recorder.flush,
    )
    return report


def sync_pending_rows(*, concurrency: int = 4, progress: Progress | None = None) -> BulkReport:
    """Every pending or failed row, due or not, and any a dead worker left in flight."""
    report = BulkReport()
    pks = list(
        state.due_rows(timezone.now(), include_failed=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    run_parallel(lambda pk: [sync.sync_row(pk)], pks, concurrency, report, progress)
    return report
