"""Celery tasks: thin wrappers over ``sync``, with explicit names and only ids as arguments.

A reusable app never creates a Celery app; ``shared_task`` binds to the project's. Arguments
are a user pk or a ContactSync row id: never an email, a name, a payload or the key, so
nothing personal sits in the broker or its logs.

``acks_late`` + ``reject_on_worker_lost``: a worker killed mid-call gives its message back to
the broker. Retries are decided here from the error class, never by ``autoretry_for``.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import sync
from .conf import get_setting

# Soft limit first (the task can still record the failure), then the hard one; both above
# the HTTP read timeout times the calls of one sync (at most a fallback pair per round).
SOFT_TIME_LIMIT = 120
TIME_LIMIT = 150

TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "max_retries": None,  # the count that matters is ContactSync.attempts
    "soft_time_limit": SOFT_TIME_LIMIT,
    "time_limit": TIME_LIMIT,
}


def _retry_or_hand_over(task: Any, result: sync.SyncResult) -> sync.SyncResult:
    """Retry through the broker when soon enough; otherwise leave it to the sweeper.

    A huge Retry-After is not parked in the broker as a countdown (Redis would redeliver it
    after the visibility timeout anyway): the row's next_attempt_at already holds it.
    """
    if result.outcome != sync.RETRY or result.retry_in is None:
        return result
    if result.retry_in > float(get_setting("RETRY_BACKOFF_MAX")):
        return result
    if task.request.retries + 1 >= int(get_setting("MAX_RETRIES")):
        return result
    raise task.retry(countdown=result.retry_in, queue=get_setting("QUEUE"))


@shared_task(name="django_orq_contacts.sync_contact", **TASK_OPTIONS)
def sync_contact(self: Any, user_pk: Any, force: bool = False) -> str:
    result = sync.sync_user(user_pk, force=force)
    return _retry_or_hand_over(self, result).outcome


@shared_task(name="django_orq_contacts.delete_contact", **TASK_OPTIONS)
def delete_contact(self: Any, row_pk: int) -> str:
    return _retry_or_hand_over(self, sync.delete_contact(row_pk)).outcome


@shared_task(
    name="django_orq_contacts.sync_pending",
    bind=True,
    ignore_result=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def sync_pending(self: Any, limit: int | None = None) -> int:
    """The periodic sweeper (schedule it with celery beat, e.g. every minute)."""
    return len(sync.sync_due(limit))


@shared_task(
    name="django_orq_contacts.reconcile_contacts",
    bind=True,
    ignore_result=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def reconcile_contacts(self: Any, batch_size: int = 500) -> int:
    """Find users whose contact differs from the last sync and queue just those.

    Catches writes that fire no signal (``queryset.update``, ``bulk_update``, raw SQL); a
    nightly beat entry is typical. Unchanged users cost one hash each and no call.
    """
    from . import bulk

    report = bulk.sync_all(bulk.users_queryset(), enqueue=True, batch_size=batch_size)
    return int(report.counts["queued"])


BY_NAME: dict[str, Any] = {
    "django_orq_contacts.sync_contact": sync_contact,
    "django_orq_contacts.delete_contact": delete_contact,
    "django_orq_contacts.sync_pending": sync_pending,
    "django_orq_contacts.reconcile_contacts": reconcile_contacts,
}
