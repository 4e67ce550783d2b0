"""Thin receivers on the user model: record the need in the same transaction, publish on commit.

Nothing here calls Orq or waits on the broker, so a user save stays fast and never fails
because Orq or the broker is down.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from . import dispatch, pausing, state
from .conf import get_setting
from .models import ContactSync
from .payload import is_sync_relevant

_ROW_ATTR = "_orq_contact_sync_pk"


def user_saved(
    sender: type[Model],
    instance: Model,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    if raw or not get_setting("AUTO_SYNC") or not is_sync_relevant(update_fields):
        return  # raw: loaddata fixtures; last_login-only saves change no contact field
    if pausing.discarding():
        return
    state.mark_dirty(instance.pk, created=created, using=using)
    if not pausing.is_paused():
        dispatch.schedule(dispatch.SYNC_TASK, str(instance.pk), using=using)


def user_deleting(
    sender: type[Model], instance: Model, using: str | None = None, **kwargs: Any
) -> None:
    # The row's link to the user is nulled by the delete itself, so remember it now.
    pk = (
        ContactSync.objects.db_manager(using)
        .filter(user_id=instance.pk)
        .values_list("pk", flat=True)
        .first()
    )
    setattr(instance, _ROW_ATTR, pk)


def user_deleted(
    sender: type[Model], instance: Model, using: str | None = None, **kwargs: Any
) -> None:
    row_pk = getattr(instance, _ROW_ATTR, None)
    if row_pk is None:
        return
    if not get_setting("AUTO_SYNC") or not get_setting("SYNC_DELETES") or pausing.discarding():
        ContactSync.objects.db_manager(using).filter(pk=row_pk).delete()
        return
    if state.mark_deleted(row_pk, using=using) and not pausing.is_paused():
        dispatch.schedule(dispatch.DELETE_TASK, row_pk, using=using)
