"""Celery tasks: thin wrappers over ``sync``, with explicit names and only ids as arguments.

A reusable app never creates a Celery app; ``shared_task`` binds to the project's. Arguments
are a user pk or a ContactSync row id: never an email, a name, a payload or the key, so
nothing personal sits in the broker or its logs.

``acks_late`` + ``reject_on_worker_lost``: a worker killed mid-call gives its message back to
the broker. Retries are decided here from the error class, never by ``autoretry_for``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from . import sync
from .conf import get_setting

logger = logging.getLogger(__name__)

# Soft limit first (the task can still record the failure), then the hard one; both above
# the HTTP read timeout times the calls of one sync (at most a fallback pair per round).
SOFT_TIME_LIMIT = 120
TIME_LIMIT = 150
# A sync_contacts message of dispatch.USERS_PER_MESSAGE users, each of which may wait up to
# ratelimit.DEFAULT_MAX_WAIT (30 s) for a slot and then the whole exchange (35 s with the
# default TIMEOUT): 10 x 65 s fits. Past the soft limit the users not yet done stay pending
# for the sweeper.
BATCH_SOFT_TIME_LIMIT = 900
BATCH_TIME_LIMIT = 960

TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "max_retries": None,  # the count that matters is ContactSync.attempts
    "soft_time_limit": SOFT_TIME_LIMIT,
    "time_limit": TIME_LIMIT,
}


def _retry_soon(result: sync.SyncResult, retries: int) -> bool:
    """Whether to retry through the broker; otherwise the sweeper takes it from the row.

    A huge Retry-After is not parked in the broker as a countdown (Redis would redeliver it
    after the visibility timeout anyway): the row's next_attempt_at already holds it.
    """
    return (
        result.outcome == sync.RETRY
        and result.retry_in is not None
        and result.retry_in <= float(get_setting("RETRY_BACKOFF_MAX"))
        and retries + 1 < int(get_setting("MAX_RETRIES"))
    )


def _retry_or_hand_over(task: Any, result: sync.SyncResult) -> sync.SyncResult:
    if _retry_soon(result, task.request.retries):
        raise task.retry(countdown=result.retry_in, queue=get_setting("QUEUE"))
    return result


@shared_task(name="django_orq_contacts.sync_contact", **TASK_OPTIONS)
def sync_contact(self: Any, user_pk: Any, force: bool = False) -> str:
    result = sync.sync_user(user_pk, force=force)
    return _retry_or_hand_over(self, result).outcome


@shared_task(
    name="django_orq_contacts.sync_contacts",
    **{**TASK_OPTIONS, "soft_time_limit": BATCH_SOFT_TIME_LIMIT, "time_limit": BATCH_TIME_LIMIT},
)
def sync_contacts(self: Any, user_pks: list[Any], force: bool = False) -> dict[str, int]:
    """Several users published together (a burst of saves, see ``dispatch.coalesce``).

    Each user is synced on its own, as ``sync_contact`` would: one user's failure (even an
    exception, say from a signal receiver or the database) never stops the others, and a
    user worth retrying soon gets a ``sync_contact`` of its own with that countdown rather
    than holding the rest back. A redelivered message (a worker killed midway) repeats no
    call for users already synced, the rows say so; a forced batch repeats its calls.
    """
    outcomes: Counter[str] = Counter()
    for user_pk in user_pks:
        try:
            result = sync.sync_user(user_pk, force=force)
            if _retry_soon(result, 0):
                sync_contact.apply_async(
                    (user_pk,),
                    {"force": True} if force else {},
                    countdown=result.retry_in,
                    queue=get_setting("QUEUE"),
                )
        except SoftTimeLimitExceeded:
            raise  # out of time: the rest stay pending for the sweeper
        except Exception:
            # The row stays pending (sync_user lets its lease go), so the sweeper retries.
            logger.exception("Contact sync of user %s failed; the sweeper will retry it", user_pk)
            outcomes[sync.FAILED] += 1
            continue
        outcomes[result.outcome] += 1
    return dict(outcomes)


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
    "django_orq_contacts.sync_contacts": sync_contacts,
    "django_orq_contacts.delete_contact": delete_contact,
    "django_orq_contacts.sync_pending": sync_pending,
    "django_orq_contacts.reconcile_contacts": reconcile_contacts,
}
