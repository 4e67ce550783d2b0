"""Transitions of ContactSync rows: marking dirty, claiming, and recording outcomes.

Every transition is one conditional UPDATE, so concurrent workers, sweepers and web
processes agree without holding a database lock across an HTTP call:

- a save bumps ``version`` and makes the row pending;
- a worker claims the row with a lease (compare-and-set), so one user is never sent by two
  workers at once; an expired lease (a killed worker) can be taken over;
- a success records the version it read and becomes ``synced`` only if no save came in
  meanwhile; otherwise the row stays pending and the worker goes round again.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Case, F, Field, Q, QuerySet, Value, When
from django.utils import timezone

from .conf import get_setting
from .models import ContactSync, quoted_column

Status = ContactSync.Status
Operation = ContactSync.Operation


def _in(seconds: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=seconds)


def mark_dirty(user_pk: Any, *, created: bool = False, using: str | None = None) -> None:
    """Record in the caller's transaction that this user's contact needs a sync."""
    db = using or router.db_for_write(ContactSync)
    if not created and _bump(user_pk, db):
        return
    manager = ContactSync.objects.db_manager(db)
    fields = {
        "status": Status.PENDING,
        "operation": Operation.UPSERT,
        "attempts": 0,
        "next_attempt_at": _in(float(get_setting("SWEEP_GRACE"))),
    }
    try:
        # A savepoint, so a racing insert does not break the caller's transaction.
        with transaction.atomic(using=db):
            manager.create(user_id=user_pk, **fields)
    except IntegrityError:
        manager.filter(user_id=user_pk).update(version=F("version") + 1, **fields)


def _bump(user_pk: Any, db: str) -> bool:
    """Make an existing row pending in one statement; False when the user has no row yet.

    This runs inside every ``user.save()``, so it is one hand-written UPDATE: the ORM's
    ``update()`` costs more Python than the plain save it follows. In autocommit (no atomic
    block) the UPDATE is its own transaction; on PostgreSQL it then commits with
    ``synchronous_commit`` off for that transaction alone (``ASYNC_MARK_COMMIT``), so the
    save does not wait on a second WAL flush. What that risks: a crash of PostgreSQL or its
    host, or a failover, in the next few hundred milliseconds (up to three
    ``wal_writer_delay``) can lose the mark, never the user's own change; the task published
    on commit still carries the change, and a scheduled ``reconcile_contacts`` finds it.
    Inside a transaction the UPDATE simply joins it and nothing is relaxed. (Django's view
    of the transaction decides: a raw ``BEGIN`` sent behind its back is not seen.)
    """
    connection = connections[db]
    postgresql = connection.vendor == "postgresql"
    relaxed = (
        postgresql
        and not connection.in_atomic_block
        and get_setting("ASYNC_MARK_COMMIT")
        and connection.get_autocommit()
    )
    grace = float(get_setting("SWEEP_GRACE"))
    user = ContactSync._meta.get_field("user")
    assert isinstance(user, Field)
    key = user.get_db_prep_value(user_pk, connection)  # a custom pk field adapts itself
    if postgresql:
        # The database's clock: each datetime adapted costs time in every save. Clock skew
        # with the app only shifts the sweeper by that much.
        params: list[Any] = [grace, key]
    else:
        now = timezone.now()
        due = now + dt.timedelta(seconds=grace)
        params = [connection.ops.adapt_datetimefield_value(value) for value in (due, now)]
        params.append(key)
    with connection.cursor() as cursor:
        cursor.execute(_bump_sql(connection, bool(relaxed)), params)
        return bool(cursor.rowcount)


_BUMP_SQL: dict[tuple[str, bool], str] = {}


def _bump_sql(connection: BaseDatabaseWrapper, relaxed: bool) -> str:
    key = (connection.vendor, relaxed)
    if key not in _BUMP_SQL:
        _BUMP_SQL[key] = _build_bump_sql(connection, relaxed)
    return _BUMP_SQL[key]


def _build_bump_sql(connection: BaseDatabaseWrapper, relaxed: bool) -> str:
    table = connection.ops.quote_name(ContactSync._meta.db_table)

    def column(name: str) -> str:
        return quoted_column(connection, name)

    version = column("version")
    assignments = ", ".join(
        [
            f"{version} = {version} + 1",
            f"{column('attempts')} = 0",
            # Our own constants, so inlined: fewer parameters to adapt on every save.
            f"{column('status')} = '{Status.PENDING.value}'",
            f"{column('operation')} = '{Operation.UPSERT.value}'",
        ]
    )
    if connection.vendor == "postgresql":
        now = "statement_timestamp()"
        assignments += f", {column('next_attempt_at')} = {now} + make_interval(secs => %s)"
        assignments += f", {column('updated_at')} = {now}"
    else:
        assignments += f", {column('next_attempt_at')} = %s, {column('updated_at')} = %s"
    # set_config(..., true) is SET LOCAL from inside the statement: it lasts until this
    # statement's own transaction commits, and leaves the session's setting alone.
    relax = " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS orq_relax"
    where = f"WHERE {column('user')} = %s"
    # Only names from our own model and literal constants are formatted in; values are
    # parameters.
    return f"UPDATE {table} SET {assignments}{relax if relaxed else ''} {where}"  # noqa: S608


def mark_deleted(row_pk: int, *, using: str | None = None) -> bool:
    """The user is gone: turn its row into a pending delete; True when a call is needed.

    A row that never reached Orq (created and deleted before any attempt) is simply removed;
    one whose attempt failed may still have created the contact (a timeout after the server
    acted), so it gets a delete too.
    """
    manager = ContactSync.objects.db_manager(using)
    row = manager.filter(pk=row_pk).first()
    if row is None:
        return False
    no_contact = row.operation == Operation.DELETE and row.status == Status.SYNCED
    # A worker holding the lease may be creating the contact right now.
    in_flight = row.lease_until is not None and row.lease_until > timezone.now()
    never_sent = row.synced_version == 0 and not row.orq_id and not row.last_error
    if no_contact or not row.external_id or (never_sent and not in_flight):
        row.delete()
        return False
    manager.filter(pk=row.pk).update(
        user=None,
        status=Status.PENDING,
        operation=Operation.DELETE,
        attempts=0,
        version=F("version") + 1,
        next_attempt_at=_in(float(get_setting("SWEEP_GRACE"))),
        updated_at=timezone.now(),
    )
    return True


def claim(row_pk: int, *, token: str | None = None) -> tuple[ContactSync, str] | None:
    """Take the lease on a row; None when another worker holds a live lease.

    A caller that already holds the lease (the sweeper claimed it) passes its ``token``.
    """
    now = timezone.now()
    if token is None:
        token = uuid.uuid4().hex
        free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        taken = ContactSync.objects.filter(free, pk=row_pk).update(
            lease_token=token, lease_until=_in(float(get_setting("LEASE_SECONDS")))
        )
        if not taken:
            return None
    row = ContactSync.objects.filter(pk=row_pk, lease_token=token).first()
    return (row, token) if row is not None else None


def claim_due(limit: int, *, include_failed: bool = False) -> list[tuple[int, str]]:
    """Claim up to ``limit`` rows the sweeper should handle now.

    ``select_for_update(skip_locked=True)`` lets two sweepers run at once without picking the
    same rows; the lease taken inside the same transaction keeps them off until done.
    """
    now = timezone.now()
    due = due_rows(now, include_failed=include_failed)
    token = uuid.uuid4().hex
    with transaction.atomic():
        pks = list(
            due.select_for_update(skip_locked=True)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        ContactSync.objects.filter(pk__in=pks).update(
            lease_token=token, lease_until=_in(float(get_setting("LEASE_SECONDS")))
        )
    return [(pk, token) for pk in pks]


def due_rows(now: dt.datetime, *, include_failed: bool = False) -> QuerySet[ContactSync]:
    """Pending or retryable failed rows whose next attempt is due and that no one holds.

    ``include_failed`` (``orq_sync_contacts --pending``) also takes rows no retry would fix
    and rows not yet due: an operator asking explicitly wants them tried now.
    """
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    unsynced = Q(status__in=[Status.PENDING, Status.FAILED])
    if include_failed:
        return ContactSync.objects.filter(free & unsynced)
    return ContactSync.objects.filter(free & unsynced & Q(next_attempt_at__lte=now))


def release(row: ContactSync, token: str) -> None:
    ContactSync.objects.filter(pk=row.pk, lease_token=token).update(
        lease_token="", lease_until=None
    )


def record_success(
    row: ContactSync,
    token: str,
    *,
    version: int,
    payload_hash: str,
    orq_id: str,
    operation: str = Operation.UPSERT,
    called: bool = True,
) -> bool:
    """Record a sync of ``version``; True when no newer save arrived meanwhile."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": Case(
            When(version=version, then=Value(Status.SYNCED)), default=Value(Status.PENDING)
        ),
        # A user deleted while the call was in flight left a tombstone: it stays a delete.
        "operation": Case(When(user__isnull=True, then=F("operation")), default=Value(operation)),
        "synced_version": version,
        "payload_hash": payload_hash,
        "attempts": 0,
        "last_error": "",
        "last_status_code": None,
        "next_attempt_at": Case(When(version=version, then=Value(None)), default=Value(now)),
        "lease_token": "",
        "lease_until": None,
        "updated_at": now,
    }
    if orq_id:
        fields["orq_id"] = orq_id
    if called:
        fields["last_synced_at"] = now
    ContactSync.objects.filter(pk=row.pk, lease_token=token).update(**fields)
    return not ContactSync.objects.filter(pk=row.pk, version__gt=version).exists()


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter; a server's Retry-After (capped) is a floor."""
    base = float(get_setting("RETRY_BACKOFF"))
    cap = float(get_setting("RETRY_BACKOFF_MAX"))
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    # "Equal jitter": keeps at least half the delay, spreads the rest so a crowd of failed
    # tasks does not come back at the same instant.
    delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - not for security
    asked = min(retry_after or 0.0, float(get_setting("RETRY_AFTER_MAX")))
    return float(max(delay, asked))


def record_failure(
    row: ContactSync,
    token: str,
    *,
    error: str,
    status_code: int | None,
    retry_in: float | None,
    count_attempt: bool = True,
) -> int:
    """Record a failed attempt; ``retry_in`` None means no retry can fix it. Returns attempts."""
    attempts = row.attempts + (1 if count_attempt else 0)
    failed = retry_in is None or attempts >= int(get_setting("MAX_RETRIES"))
    grace = float(get_setting("SWEEP_GRACE"))
    ContactSync.objects.filter(pk=row.pk, lease_token=token).update(
        status=Status.FAILED if failed else Status.PENDING,
        attempts=attempts,
        last_error=error[:2000],
        last_status_code=status_code,
        # The sweeper is the backstop of a broker retry: give the retry its head start.
        next_attempt_at=None if retry_in is None else _in(retry_in + grace),
        lease_token="",
        lease_until=None,
        updated_at=timezone.now(),
    )
    return attempts


def mark_pending(queryset: QuerySet[ContactSync]) -> int:
    """Make rows due for the sweeper now, whatever their state (an operator's resync)."""
    return queryset.update(
        status=Status.PENDING,
        attempts=0,
        next_attempt_at=timezone.now(),
        version=F("version") + 1,
        updated_at=timezone.now(),
    )
