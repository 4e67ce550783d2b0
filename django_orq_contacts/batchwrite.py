"""Record the bulk command's successful calls a batch at a time.

``state.record_success`` compiles and commits one UPDATE (plus a check) per user: after the
call itself, the largest cost of a bulk sync. The recorder gathers the successes the worker
threads report and writes them with one UPDATE per lease token, setting exactly what
``state.record_success`` sets, under the same conditions (the lease still held; ``synced``
only when no newer save arrived). A batch is written when it is full, when its oldest entry
has waited ``max_age`` seconds, and at the end of the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from . import signals, sync
from .backends import BaseBackend, UpsertResult
from .models import ContactSync, quoted_column
from .redaction import redact

logger = logging.getLogger(__name__)
Status = ContactSync.Status
Entry = tuple[Any, ContactSync, str, dict[str, Any], str, UpsertResult]  # user, row, token...


class Recorder:
    def __init__(self, backend: BaseBackend, size: int, max_age: float = 1.0) -> None:
        self.backend = backend
        self.size = size
        self.max_age = max_age
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._since = 0.0

    def add(self, entry: Entry) -> list[sync.SyncResult]:
        """Queue one success; returns the results of a batch written now, if any."""
        with self._lock:
            if not self._entries:
                self._since = time.monotonic()
            self._entries.append(entry)
            if len(self._entries) < self.size and time.monotonic() - self._since < self.max_age:
                return []
            batch, self._entries = self._entries, []
        return self.write(batch)

    def flush(self) -> list[sync.SyncResult]:
        with self._lock:
            batch, self._entries = self._entries, []
        return self.write(batch)

    def write(self, batch: list[Entry]) -> list[sync.SyncResult]:
        if not batch:
            return []
        try:
            newer = record_successes(batch)
        except Exception as exc:
            # The contacts were sent; the rows stay pending (their leases run out) and the
            # next run or the sweeper sends them again, which an upsert makes harmless.
            logger.exception("Could not record %d synced contacts", len(batch))
            error = redact(f"recording the sync failed: {type(exc).__name__}")
            return [sync.SyncResult(sync.FAILED, user.pk, error=error) for user, *_ in batch]
        results = []
        for user, row, _token, body, _digest, outcome in batch:
            signals.contact_synced.send(
                sender=type(user), user=user, payload=body, orq_id=outcome.orq_id
            )
            if row.pk not in newer:
                results.append(sync.SyncResult(sync.SYNCED, user.pk, calls=outcome.calls))
                continue
            # A save landed while the call was in flight: send the newer state too.
            again = sync.sync_user(user.pk, backend=self.backend)
            if again.outcome == sync.BUSY:
                again.outcome = sync.SYNCED
            again.calls += outcome.calls
            results.append(again)
        return results


def record_successes(batch: Iterable[Entry]) -> set[int]:
    """``state.record_success`` for many rows; returns the pks that got a newer save.

    Plain SQL: the ORM's ``Case(When(...))`` per row costs more to compile than the
    calls it records. ``V`` below is each row's recorded version.
    """
    by_token: dict[str, list[Entry]] = {}
    for entry in batch:
        by_token.setdefault(entry[2], []).append(entry)
    connection = connections[router.db_for_write(ContactSync)]
    recorded: dict[int, int] = {}
    for token, entries in by_token.items():
        rows = [(e[1].pk, e[1].version, e[4], e[5].orq_id) for e in entries]
        recorded.update((pk, version) for pk, version, _, _ in rows)
        with connection.cursor() as cursor:
            cursor.execute(*_update_sql(connection, rows, token))
    current = ContactSync.objects.filter(pk__in=list(recorded)).values_list("pk", "version")
    return {pk for pk, version in current if version > recorded[pk]}


def _update_sql(
    connection: BaseDatabaseWrapper, rows: list[tuple[int, int, str, str]], token: str
) -> tuple[str, list[Any]]:
    meta = ContactSync._meta

    def q(name: str) -> str:
        return quoted_column(connection, name)

    now = meta.get_field("updated_at").get_db_prep_value(timezone.now(), connection)
    pk = q(meta.pk.name)

    def per_row(index: int, subset: list[tuple[int, int, str, str]]) -> tuple[str, list[Any]]:
        whens = " ".join(f"WHEN {pk} = %s THEN %s" for _ in subset)
        return f"CASE {whens}", [value for row in subset for value in (row[0], row[index])]

    version_case, version_params = per_row(1, rows)
    hash_case, hash_params = per_row(2, rows)
    recorded = f"({version_case} END)"
    sets = [
        # A user deleted while the call was in flight left a tombstone: it stays a delete.
        f"{q('operation')} = CASE WHEN {q('user')} IS NULL THEN {q('operation')} ELSE %s END",
        f"{q('status')} = CASE WHEN {q('version')} = {recorded} THEN %s ELSE %s END",
        f"{q('synced_version')} = {recorded}",
        f"{q('next_attempt_at')} = CASE WHEN {q('version')} = {recorded} THEN NULL ELSE %s END",
        f"{q('payload_hash')} = {hash_case} END",
    ]
    params: list[Any] = [ContactSync.Operation.UPSERT]
    params += [*version_params, Status.SYNCED, Status.PENDING, *version_params]
    params += [*version_params, now, *hash_params]
    with_id = [row for row in rows if row[3]]
    if with_id:
        orq_case, orq_params = per_row(3, with_id)
        sets.append(f"{q('orq_id')} = {orq_case} ELSE {q('orq_id')} END")
        params += orq_params
    constants = {
        "attempts": 0,
        "last_error": "",
        "last_status_code": None,
        "lease_token": "",
        "lease_until": None,
        "updated_at": now,
        "last_synced_at": now,
    }
    sets += [f"{q(name)} = %s" for name in constants]
    params += list(constants.values())
    placeholders = ", ".join("%s" for _ in rows)
    # Only quoted names from the model's meta go into the text; every value is a parameter.
    sql = (
        f"UPDATE {connection.ops.quote_name(meta.db_table)} SET {', '.join(sets)} "  # noqa: S608
        f"WHERE {pk} IN ({placeholders}) AND {q('lease_token')} = %s"
    )
    return sql, [*params, *(row[0] for row in rows), token]
