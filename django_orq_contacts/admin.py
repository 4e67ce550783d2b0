"""Admin for ContactSync rows, and the user admin's sync action."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from . import admin_actions, dispatch, state, sync
from .admin_actions import attach_to_user_admin
from .models import ContactSync

if TYPE_CHECKING:
    ModelAdminBase = admin.ModelAdmin[ContactSync]
else:  # ModelAdmin is generic only in django-stubs, not at run time
    ModelAdminBase = admin.ModelAdmin


@admin.register(ContactSync)
class ContactSyncAdmin(ModelAdminBase):
    list_display = (
        "external_id",
        "user",
        "status",
        "operation",
        "last_synced_at",
        "attempts",
        "last_status_code",
        "short_error",
    )
    list_filter = ("status", "operation", "last_status_code")
    search_fields = ("external_id", "orq_id")
    date_hierarchy = "last_synced_at"
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    actions = ("resync", "mark_pending")
    readonly_fields = (
        "user",
        "external_id",
        "operation",
        "status",
        "payload_hash",
        "orq_id",
        "attempts",
        "last_error",
        "last_status_code",
        "last_synced_at",
        "version",
        "synced_version",
        "next_attempt_at",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows are made by saves and syncs, never by hand

    @admin.display(description="last error")
    def short_error(self, obj: ContactSync) -> str:
        return obj.last_error[:80]

    @admin.action(description="Sync selected rows to Orq now", permissions=["change"])
    def resync(self, request: HttpRequest, queryset: QuerySet[ContactSync]) -> None:
        # Rows of deleted users carry a pending delete of the contact: redo that delete.
        rows = queryset.order_by()
        users = rows.filter(user__isnull=False).values_list("user_id", flat=True)
        count = sync.request_sync(users, force=True, chunk_size=admin_actions.ENQUEUE_CHUNK)
        count += _request_deletes(rows.filter(user__isnull=True).values_list("pk", flat=True))
        self.message_user(
            request,
            ngettext(
                "%(count)d row was queued for sync.",
                "%(count)d rows were queued for sync.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(
        description="Mark selected rows pending (the sweeper retries them)", permissions=["change"]
    )
    def mark_pending(self, request: HttpRequest, queryset: QuerySet[ContactSync]) -> None:
        count = state.mark_pending(queryset)
        self.message_user(
            request,
            ngettext("%(count)d row marked pending.", "%(count)d rows marked pending.", count)
            % {"count": count},
            messages.SUCCESS,
        )


def _request_deletes(row_pks: Iterable[int]) -> int:
    """Make tombstone rows due and queue their delete, one transaction per chunk."""
    pks = list(row_pks)
    chunk_size = admin_actions.ENQUEUE_CHUNK
    for start in range(0, len(pks), chunk_size):
        chunk = pks[start : start + chunk_size]
        with transaction.atomic():
            state.mark_pending(ContactSync.objects.filter(pk__in=chunk, user__isnull=True))
            for pk in chunk:
                dispatch.schedule(dispatch.DELETE_TASK, pk)
    return len(pks)


attach_to_user_admin()
