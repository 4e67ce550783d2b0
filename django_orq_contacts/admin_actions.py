"""The "Sync selected users to Orq" action, attached to whatever admin the user model has.

Attaching at run time (rather than asking projects to subclass) works with Django's stock
UserAdmin and with custom ones; projects with their own AdminSite can add ``sync_to_orq`` to
``actions`` themselves.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from . import sync


@admin.action(description="Sync selected users to Orq", permissions=["change"])
def sync_to_orq(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    count = sync.request_sync(queryset.values_list("pk", flat=True), force=True)
    modeladmin.message_user(
        request,
        ngettext(
            "%(count)d user was queued for sync to Orq.",
            "%(count)d users were queued for sync to Orq.",
            count,
        )
        % {"count": count},
        messages.SUCCESS,
    )


def attach_to_user_admin(site: admin.AdminSite | None = None) -> bool:
    """Add the action to the user model's ModelAdmin on ``site``; False if not registered."""
    site = site or admin.site
    model_admin = site._registry.get(get_user_model())
    if model_admin is None:
        return False
    actions = list(model_admin.actions or [])
    if sync_to_orq not in actions:
        model_admin.actions = [*actions, sync_to_orq]
    return True
