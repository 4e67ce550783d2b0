"""The bulk command's fast path: database work per chunk of users, only the call per user.

``sync.sync_user`` spends five queries around each call (find the row, claim it, re-read
it, read the user, record). Over a whole site those, not the network, would bound the
command. Here a chunk of users is claimed with one UPDATE and re-read with two SELECTs (the
users after the claim, so a save that lands meanwhile is never mistaken for synced); the
worker threads make the calls, and their successes are recorded a batch at a time
(``batchwrite``).

Anything but a plain upsert (SHOULD_SYNC false, an unchanged payload, an external id that
changed since the last sync, a lease about to run out) goes to ``sync.sync_user`` with the
lease already held, so the rules stay in the one place of work.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from . import payload as payloads
from . import state, sync
from .backends import BaseBackend
from .batchwrite import Recorder
from .conf import get_setting
from .exceptions import OrqAPIError, PayloadError
from .models import ContactSync

Operation = ContactSync.Operation
# A job whose lease has less than this left is handed to sync_user, which claims afresh.
LEASE_MARGIN = dt.timedelta(seconds=30)
# What the fast path and sync's failure recording read of a row (the rest is never parsed).
ROW_FIELDS = (
    "user_id",
    "version",
    "synced_version",
    "operation",
    "orq_id",
    "external_id",
    "payload_hash",
    "attempts",
    "lease_until",
)


@dataclass
class Job:
    """One claimed user: either a ready call (``body``) or a hand-over to ``sync_user``."""

    user_pk: Any
    token: str
    row: ContactSync | None = None
    user: Model | None = None
    body: dict[str, Any] | None = None
    digest: str = ""
    known: bool = False
    force: bool = False
    # Set when the chunk's reading already settled the user (busy, gone, skipped, failed).
    result: sync.SyncResult | None = None


def ensure_rows(users: Iterable[Model], rows: dict[Any, ContactSync]) -> None:
    """Give users made without signals (bulk_create, raw SQL) their pending row, in one INSERT.

    What ``state.mark_dirty`` does for one user, plus the external id, so that a contact
    created by a call that then times out can still be deleted later.
    """
    due = timezone.now() + dt.timedelta(seconds=float(get_setting("SWEEP_GRACE")))
    new = [
        ContactSync(
            user_id=user.pk,
            external_id=_external_id(user),
            status=ContactSync.Status.PENDING,
            operation=Operation.UPSERT,
            attempts=0,
            next_attempt_at=due,
        )
        for user in users
        if user.pk not in rows
    ]
    if new:
        # A row made meanwhile by a save (or another run) wins; it is pending all the same.
        ContactSync.objects.bulk_create(new, ignore_conflicts=True)


def _external_id(user: Model) -> str:
    try:
        return payloads.external_id_for(user)
    except PayloadError:
        return ""  # sync_user records the error when it gets to this user


def claim_chunk(user_pks: list[Any], fresh_users: QuerySet[Model], force: bool) -> list[Job]:
    """Lease the rows of ``user_pks`` that no one holds; one job per user, in order."""
    token = uuid.uuid4().hex
    now = timezone.now()
    lease = dt.timedelta(seconds=float(get_setting("LEASE_SECONDS")))
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    try:
        ContactSync.objects.filter(free, user_id__in=user_pks).update(
            lease_token=token, lease_until=now + lease
        )
        claimed = ContactSync.objects.filter(lease_token=token).only(*ROW_FIELDS)
        rows = {row.user_id: row for row in claimed}
        # Read after the claim: a save committed before it is in these users; one
        # committed after it bumped the version, which record_success notices.
        users = {user.pk: user for user in fresh_users.filter(pk__in=user_pks)}
        return [_job(pk, token, rows.get(pk), users.get(pk), force) for pk in user_pks]
    except BaseException:
        ContactSync.objects.filter(lease_token=token, user_id__in=user_pks).update(
            lease_token="", lease_until=None
        )
        raise


def _job(pk: Any, token: str, row: ContactSync | None, user: Model | None, force: bool) -> Job:
    job = Job(pk, token, row=row, user=user, force=force)
    if row is None:
        job.result = sync.SyncResult(sync.GONE if user is None else sync.BUSY, pk)
        return job
    if user is None:
        state.release(row, token)
        job.result = sync.SyncResult(sync.GONE, pk)
        return job
    if not payloads.should_sync(user):
        return job  # sync_user deletes or skips the contact
    try:
        body = payloads.build(user)
        if not sync.allowed_by_receivers(user, body):
            state.release(row, token)
            job.result = sync.SyncResult(sync.SKIPPED, pk)
            return job
    except PayloadError as exc:
        job.result = sync.record_error(user, row, token, exc)
        return job
    digest = payloads.payload_hash(body, str(get_setting("RESOURCE")))
    if not force and sync.is_unchanged(row, digest):
        return job
    moved = row.external_id not in ("", body["external_id"]) and row.synced_version > 0
    if moved and row.operation == Operation.UPSERT:
        return job  # the contact under the old id must be deleted first
    job.body, job.digest = body, digest
    known = row.synced_version > 0 and row.operation == Operation.UPSERT
    job.known = known or bool(row.orq_id)
    return job


def save_external_ids(jobs: list[Job]) -> None:
    """Record the id each call will use before making it (one UPDATE for the chunk)."""
    changed = []
    for job in jobs:
        row, body = job.row, job.body
        if row is not None and body is not None and row.external_id != body["external_id"]:
            row.external_id = body["external_id"]
            changed.append(row)
    if changed:
        ContactSync.objects.bulk_update(changed, ["external_id"])


def release(jobs: Iterable[Job]) -> None:
    """Let go of leases taken for jobs that will not run (Ctrl-C)."""
    by_token: dict[str, list[Any]] = {}
    for job in jobs:
        if job.row is not None and job.result is None:
            by_token.setdefault(job.token, []).append(job.row.pk)
    for token, pks in by_token.items():
        ContactSync.objects.filter(pk__in=pks, lease_token=token).update(
            lease_token="", lease_until=None
        )


def run(job: Job, backend: BaseBackend, recorder: Recorder) -> list[sync.SyncResult]:
    """Do one job on a worker thread; the results of any batch recorded meanwhile."""
    if job.result is not None:
        return [job.result]
    row, user, body = job.row, job.user, job.body
    assert row is not None
    assert user is not None
    lease_left = (row.lease_until or timezone.now()) - timezone.now()
    if body is None or lease_left < LEASE_MARGIN:
        token = job.token if body is None else None
        if token is None:
            state.release(row, job.token)
        return [sync.sync_user(job.user_pk, force=job.force, token=token, backend=backend)]
    try:
        outcome = backend.upsert(body, known=job.known)
    except OrqAPIError as exc:
        result = sync.record_error(user, row, job.token, exc)
        result.calls = 1
        return [result]
    except BaseException:
        # As in sync_user: let the row go now, not when the lease expires.
        state.release(row, job.token)
        raise
    return recorder.add((user, row, job.token, body, job.digest, outcome))
