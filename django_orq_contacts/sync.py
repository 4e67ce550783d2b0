"""The one place of work: sync a user, delete a contact, sweep what is due.

The Celery tasks, the admin actions and ``orq_sync_contacts`` all call these functions, so
the rules (hash check, lease, error classes, what is recorded) hold whatever the entry point.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Model

from . import circuit, dispatch, signals, state
from . import payload as payloads
from .backends import BaseBackend, get_backend
from .conf import get_setting
from .exceptions import (
    OrqAPIError,
    OrqAuthError,
    OrqCircuitOpenError,
    OrqThrottledError,
    PayloadError,
)
from .models import ContactSync
from .redaction import redact

logger = logging.getLogger(__name__)

SYNCED = "synced"
UNCHANGED = "unchanged"
SKIPPED = "skipped"
DELETED = "deleted"
FAILED = "failed"
RETRY = "retry"
BUSY = "busy"
GONE = "gone"
WOULD_SYNC = "would_sync"
# How often one call goes round again because the user was saved while it was in flight.
MAX_ROUNDS = 3
REQUEST_CHUNK = 500
AUTH_ALERT_INTERVAL = 600.0
# Errors raised before anything was sent (breaker open, no rate-limit slot): not an attempt.
NOT_SENT = (OrqCircuitOpenError, OrqThrottledError)


@dataclass
class SyncResult:
    outcome: str
    user_pk: Any = None
    calls: int = 0
    error: str = ""
    status_code: int | None = None
    # Seconds until a retry is worth it; None when no retry can help.
    retry_in: float | None = None

    @property
    def failed(self) -> bool:
        return self.outcome in (FAILED, RETRY)


def request_sync(
    user_pks: Iterable[Any], *, force: bool = False, chunk_size: int = REQUEST_CHUNK
) -> int:
    """Mark users pending and queue their sync after commit, in chunks; return the count.

    The admin actions use this: one transaction and one burst of publishes per chunk keeps a
    selection of thousands from holding one long transaction or one huge on-commit list.
    """
    count = 0
    chunk: list[Any] = []
    for pk in user_pks:
        chunk.append(pk)
        if len(chunk) >= chunk_size:
            count += _request_chunk(chunk, force)
            chunk = []
    if chunk:
        count += _request_chunk(chunk, force)
    return count


def _request_chunk(pks: list[Any], force: bool) -> int:
    with transaction.atomic():
        for pk in pks:
            state.mark_dirty(pk)
            dispatch.schedule(dispatch.SYNC_TASK, str(pk), force=force)
    return len(pks)


def user_model() -> type[Model]:
    return get_user_model()


def sync_user(
    user_pk: Any,
    *,
    force: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    backend: BaseBackend | None = None,
) -> SyncResult:
    """Bring the user's Orq contact in line with the database.

    ``token`` is a lease the caller already holds (the sweeper); otherwise one is taken, and
    a user another worker is syncing right now is left to it (``busy``): that worker checks
    for newer saves before it lets go.
    """
    if dry_run:
        return _preview(user_pk, force)
    row = ContactSync.objects.filter(user_id=user_pk).first()
    if row is None:
        if not user_model()._default_manager.filter(pk=user_pk).exists():
            return SyncResult(GONE, user_pk)
        # A user created without signals (bulk_create, raw SQL, before install).
        state.mark_dirty(user_pk)
        row = ContactSync.objects.get(user_id=user_pk)
    backend = backend or get_backend()
    result = SyncResult(BUSY, user_pk)
    calls = 0
    for _ in range(MAX_ROUNDS):
        claimed = state.claim(row.pk, token=token)
        if claimed is None:
            break
        row, token = claimed
        try:
            result = _sync_claimed(user_pk, row, token, force, backend)
        except BaseException:
            # A bug, a database error or Celery's soft time limit: let the row go now, not
            # when the lease expires; it is still pending, so the sweeper will retry it.
            state.release(row, token)
            raise
        calls += result.calls
        if result.outcome != "again":
            break
        # A save landed while the call was in flight: send the newer state too.
        token, force = None, False
    if result.outcome == "again":
        # Saves kept landing during the calls, and their tasks found the row busy and left
        # it to us: queue a fresh sync rather than leave the newest state to the sweeper.
        dispatch.schedule(dispatch.SYNC_TASK, str(user_pk))
        result.outcome = SYNCED
    result.calls = calls
    return result


def _sync_claimed(
    user_pk: Any, row: ContactSync, token: str, force: bool, backend: BaseBackend
) -> SyncResult:
    version = row.version
    user = user_model()._default_manager.filter(pk=user_pk).first()
    if user is None or (row.operation == ContactSync.Operation.DELETE and row.user_id is None):
        state.release(row, token)
        return SyncResult(GONE, user_pk)
    if not payloads.should_sync(user):
        return _exclude(user, row, token, version, backend)
    try:
        body = payloads.build(user)
        if not allowed_by_receivers(user, body):
            state.release(row, token)
            return SyncResult(SKIPPED, user_pk)
    except PayloadError as exc:
        return record_error(user, row, token, exc)
    digest = payloads.payload_hash(body, str(get_setting("RESOURCE")))
    if not force and is_unchanged(row, digest):
        done = state.record_success(
            row, token, version=version, payload_hash=digest, orq_id="", called=False
        )
        return SyncResult(UNCHANGED if done else "again", user_pk)
    calls = 0
    try:
        calls += _forget_old_external_id(row, body["external_id"], backend)
        if row.external_id != body["external_id"]:
            ContactSync.objects.filter(pk=row.pk).update(external_id=body["external_id"])
        known = row.synced_version > 0 and row.operation == ContactSync.Operation.UPSERT
        outcome = backend.upsert(body, known=known or bool(row.orq_id))
    except OrqAPIError as exc:
        result = record_error(user, row, token, exc)
        result.calls = calls + 1
        return result
    done = state.record_success(
        row, token, version=version, payload_hash=digest, orq_id=outcome.orq_id
    )
    signals.contact_synced.send(sender=type(user), user=user, payload=body, orq_id=outcome.orq_id)
    return SyncResult(SYNCED if done else "again", user_pk, calls=calls + outcome.calls)


def is_unchanged(row: ContactSync, digest: str) -> bool:
    return (
        row.payload_hash == digest
        and row.synced_version > 0
        and row.operation == ContactSync.Operation.UPSERT
    )


def allowed_by_receivers(user: Model, body: dict[str, Any]) -> bool:
    """Send ``pre_contact_sync``; a receiver may edit ``payload`` in place or return False."""
    responses = signals.pre_contact_sync.send(sender=type(user), user=user, payload=body)
    if any(response is False for _, response in responses):  # type: ignore[comparison-overlap]
        return False
    if not body.get("external_id"):
        raise PayloadError("a pre_contact_sync receiver removed external_id")
    return True


def _forget_old_external_id(row: ContactSync, new_id: str, backend: BaseBackend) -> int:
    """When EXTERNAL_ID now gives another id, delete the contact under the old one."""
    if not row.external_id or row.external_id == new_id or row.synced_version == 0:
        return 0
    if row.operation != ContactSync.Operation.UPSERT:
        return 0
    return backend.delete(row.external_id)


def _exclude(
    user: Model, row: ContactSync, token: str, version: int, backend: BaseBackend
) -> SyncResult:
    """SHOULD_SYNC is false: delete a contact synced earlier (if DELETE_EXCLUDED), else skip."""
    has_contact = row.synced_version > 0 and row.operation == ContactSync.Operation.UPSERT
    if not has_contact or not get_setting("DELETE_EXCLUDED"):
        operation = row.operation if has_contact else ContactSync.Operation.DELETE
        state.record_success(
            row,
            token,
            version=version,
            payload_hash=row.payload_hash,
            orq_id="",
            operation=operation,
            called=False,
        )
        return SyncResult(SKIPPED, user.pk)
    try:
        calls = backend.delete(row.external_id)
    except OrqAPIError as exc:
        return record_error(user, row, token, exc)
    state.record_success(
        row,
        token,
        version=version,
        payload_hash="",
        orq_id="",
        operation=ContactSync.Operation.DELETE,
    )
    return SyncResult(DELETED, user.pk, calls=calls)


def record_error(user: Model | None, row: ContactSync, token: str, exc: Exception) -> SyncResult:
    """Record a failure with its class: transient errors get a retry time, others none."""
    status_code = getattr(exc, "status", None)
    message = redact(f"{type(exc).__name__}: {exc}")
    retry_in = None
    if isinstance(exc, OrqAPIError) and exc.transient:
        retry_in = state.backoff(row.attempts + 1, exc.retry_after)
    # Calls held back by the circuit breaker or the rate limiter were never tried: they use
    # no attempt, so an outage or a long queue alone does not push users to "failed".
    attempts = state.record_failure(
        row,
        token,
        error=message,
        status_code=status_code,
        retry_in=retry_in,
        count_attempt=not isinstance(exc, NOT_SENT),
    )
    _log_failure(row, exc, message, attempts, retry_in)
    if user is not None:
        signals.contact_sync_failed.send(
            sender=type(user), user=user, error=exc, will_retry=retry_in is not None
        )
    return SyncResult(
        RETRY if retry_in is not None else FAILED,
        row.user_id,
        error=message,
        status_code=status_code,
        retry_in=retry_in,
    )


def _log_failure(
    row: ContactSync, exc: Exception, message: str, attempts: int, retry_in: float | None
) -> None:
    if isinstance(exc, OrqAuthError):
        # Every call fails the same way until someone fixes the key: say it loudly once,
        # not once per user nor once per worker process.
        if circuit.first_auth_alert(AUTH_ALERT_INTERVAL):
            logger.error(
                "Orq rejected the API key (%s); contact sync is failing. Check "
                "ORQ_CONTACTS['API_KEY'].",
                message,
            )
        return
    if retry_in is None:
        logger.warning("Contact sync %s failed permanently: %s", row.pk, message)
    else:
        logger.info(
            "Contact sync %s failed (attempt %d), retry in %.0fs: %s",
            row.pk,
            attempts,
            retry_in,
            message,
        )


def _preview(user_pk: Any, force: bool) -> SyncResult:
    """What a sync would do, with no HTTP call and no state change (``--dry-run``)."""
    user = user_model()._default_manager.filter(pk=user_pk).first()
    if user is None:
        return SyncResult(GONE, user_pk)
    if not payloads.should_sync(user):
        return SyncResult(SKIPPED, user_pk)
    try:
        body = payloads.build(user)
    except PayloadError as exc:
        return SyncResult(FAILED, user_pk, error=redact(str(exc)))
    row = ContactSync.objects.filter(user_id=user_pk).first()
    digest = payloads.payload_hash(body, str(get_setting("RESOURCE")))
    if not force and row is not None and is_unchanged(row, digest):
        return SyncResult(UNCHANGED, user_pk)
    return SyncResult(WOULD_SYNC, user_pk)


def delete_contact(
    row_pk: int, *, token: str | None = None, backend: BaseBackend | None = None
) -> SyncResult:
    """Delete the contact of a deleted user, recorded by ``state.mark_deleted``."""
    claimed = state.claim(row_pk, token=token)
    if claimed is None:
        exists = ContactSync.objects.filter(pk=row_pk).exists()
        return SyncResult(BUSY if exists else GONE)
    row, token = claimed
    if row.operation != ContactSync.Operation.DELETE or row.user_id is not None:
        state.release(row, token)
        return SyncResult(SKIPPED, row.user_id)
    try:
        calls = (backend or get_backend()).delete(row.external_id)
    except OrqAPIError as exc:
        return record_error(None, row, token, exc)
    # Only if nothing changed meanwhile; the tombstone has done its job.
    ContactSync.objects.filter(pk=row.pk, version=row.version, lease_token=token).delete()
    return SyncResult(DELETED, calls=calls)


def sync_row(
    row_pk: int, *, token: str | None = None, backend: BaseBackend | None = None
) -> SyncResult:
    """Finish whatever one ContactSync row still needs (an upsert or a delete)."""
    if token is None:
        claimed = state.claim(row_pk)
        if claimed is None:
            return SyncResult(BUSY)
        token = claimed[1]
    row = ContactSync.objects.filter(pk=row_pk).first()
    if row is None:
        return SyncResult(GONE)
    if row.user_id is not None:
        return sync_user(row.user_id, token=token, backend=backend)
    if row.operation == ContactSync.Operation.DELETE:
        return delete_contact(row.pk, token=token, backend=backend)
    # The user went while SYNC_DELETES was off: nothing is left to do for this row.
    row.delete()
    return SyncResult(GONE)


def sync_due(limit: int | None = None, *, include_failed: bool = False) -> list[SyncResult]:
    """The sweeper: finish every row the fast path did not (broker down, worker killed...)."""
    backend = get_backend()
    claimed = state.claim_due(
        limit or int(get_setting("SWEEP_BATCH")), include_failed=include_failed
    )
    return [sync_row(row_pk, token=token, backend=backend) for row_pk, token in claimed]
