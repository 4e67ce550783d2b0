"""The user admin's Orq parts, attached to whatever admin the user model has.

Attaching at run time (rather than asking projects to subclass) works with Django's stock
UserAdmin and with custom ones: the registered admin class is swapped for a subclass that puts
:class:`OrqUserAdminMixin` first, so the project's own overrides still run underneath. A
project can also mix ``OrqUserAdminMixin`` into its admin itself; then nothing is swapped.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import select_template
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from . import sync
from .models import ContactSync

if TYPE_CHECKING:
    from django.utils.safestring import SafeString

    MixinBase = admin.ModelAdmin[Any]
else:  # the mixin must not be a ModelAdmin itself, or the MRO of the swapped class breaks
    MixinBase = object

Status = ContactSync.Status
RELATED = "orq_contact_sync"
NEVER = "never"
# SHOULD_SYNC said no: the row records that no contact exists (or it was removed).
EXCLUDED = "excluded"
STATUS_LABELS = {
    Status.SYNCED: _("synced"),
    Status.PENDING: _("pending"),
    Status.FAILED: _("failed"),
    NEVER: _("never"),
    EXCLUDED: _("excluded"),
}
EMPTY = "-"
# Selections are marked and queued this many users per transaction (see sync.request_sync).
ENQUEUE_CHUNK = sync.REQUEST_CHUNK
CHANGE_FORM_TEMPLATE = "django_orq_contacts/admin/user_change_form.html"


@admin.action(description="Sync selected users to Orq", permissions=["change"])
def sync_to_orq(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    # order_by(): the changelist's ordering and joins are no use for a list of keys.
    pks = queryset.order_by().values_list("pk", flat=True)
    count = sync.request_sync(pks, force=True, chunk_size=ENQUEUE_CHUNK)
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


def contact_status(row: ContactSync | None) -> str:
    """One word for the changelist: synced, pending, failed, never or excluded."""
    if row is None:
        return NEVER
    if row.status == Status.SYNCED and row.operation == ContactSync.Operation.DELETE:
        return EXCLUDED
    return str(row.status)


def _row_of(user: Any) -> ContactSync | None:
    try:
        row: ContactSync = getattr(user, RELATED)
    except ContactSync.DoesNotExist:
        return None
    return row


def _when(moment: datetime | None) -> str:
    return formats.localize(timezone.localtime(moment)) if moment else EMPTY


class OrqSyncStatusFilter(admin.SimpleListFilter):
    title = _("Orq sync status")
    parameter_name = "orq_sync"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, Any]]:
        return [(str(value), label) for value, label in STATUS_LABELS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        delete = ContactSync.Operation.DELETE
        status = f"{RELATED}__status"
        operation = f"{RELATED}__operation"
        if value == NEVER:
            return queryset.filter(**{f"{RELATED}__isnull": True})
        if value == EXCLUDED:
            return queryset.filter(**{status: Status.SYNCED, operation: delete})
        if value == Status.SYNCED:
            return queryset.filter(**{status: Status.SYNCED}).exclude(**{operation: delete})
        if value in (Status.PENDING, Status.FAILED):
            return queryset.filter(**{status: value})
        return None


class OrqUserAdminMixin(MixinBase):
    """Sync status column and filter, the contact's state and a "Sync now" button."""

    change_form_template = CHANGE_FORM_TEMPLATE

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # One join instead of one query per row for the status column.
        return super().get_queryset(request).select_related(RELATED)

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = list(super().get_list_display(request))
        return shown if "orq_sync_status" in shown else [*shown, "orq_sync_status"]

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = list(super().get_list_filter(request))
        return filters if OrqSyncStatusFilter in filters else [*filters, OrqSyncStatusFilter]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        return fields if obj is None else [*fields, "orq_contact_state"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:
            return fieldsets
        return [*fieldsets, (_("Orq contact"), {"fields": ["orq_contact_state"]})]

    @admin.display(description=_("Orq sync"), ordering=f"{RELATED}__status")
    def orq_sync_status(self, obj: Any) -> str:
        return str(STATUS_LABELS[contact_status(_row_of(obj))])

    @admin.display(description=_("state"))
    def orq_contact_state(self, obj: Any) -> SafeString:
        row = _row_of(obj)
        if row is None:
            return format_html("{}", _("Never sent to Orq."))
        return format_html(
            '<dl class="orq-contact-state">'
            "<dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd>"
            "<dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd></dl>",
            _("status"),
            STATUS_LABELS[contact_status(row)],
            _("last synced"),
            _when(row.last_synced_at),
            _("Orq id"),
            row.orq_id or EMPTY,
            _("attempts"),
            row.attempts,
            _("last error"),
            row.last_error or EMPTY,
        )

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        sync_now = path(
            "<path:object_id>/orq-sync/",
            self.admin_site.admin_view(self.orq_sync_now_view),
            name=f"{opts.app_label}_{opts.model_name}_orq_sync",
        )
        # First: the stock catch-all "<path:object_id>/" would swallow it otherwise.
        return [sync_now, *super().get_urls()]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        context["orq_parent_template"] = self._orq_parent_template()
        if obj is not None and change and self.has_change_permission(request, obj):
            opts = self.opts
            context["orq_sync_now_url"] = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_orq_sync",
                args=(quote(obj.pk),),
                current_app=self.admin_site.name,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _orq_parent_template(self) -> Any:
        """The change form this admin would render without the mixin, for ``extends``."""
        own = getattr(self, "_orq_original_change_form_template", None)
        if own:
            return own if isinstance(own, str) else select_template(list(own))
        opts = self.opts
        return select_template(
            [
                f"admin/{opts.app_label}/{opts.model_name}/change_form.html",
                f"admin/{opts.app_label}/change_form.html",
                "admin/change_form.html",
            ]
        )

    @method_decorator(require_POST)
    def orq_sync_now_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return _sync_now(self, request, object_id)


def _sync_now(model_admin: OrqUserAdminMixin, request: HttpRequest, object_id: str) -> HttpResponse:
    obj = model_admin.get_object(request, unquote(object_id))
    if obj is None:
        raise Http404("No such user.")
    if not model_admin.has_change_permission(request, obj):
        raise PermissionDenied
    sync.request_sync([obj.pk], force=True)
    model_admin.message_user(
        request, _("%(user)s was queued for sync to Orq.") % {"user": obj}, messages.SUCCESS
    )
    opts = model_admin.opts
    return HttpResponseRedirect(
        reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=(quote(obj.pk),),
            current_app=model_admin.admin_site.name,
        )
    )


def attach_to_user_admin(site: admin.AdminSite | None = None) -> bool:
    """Give the user model's admin on ``site`` the Orq parts; False if it is not registered."""
    site = site or admin.site
    model = get_user_model()
    model_admin = site._registry.get(model)
    if model_admin is None:
        return False
    if not isinstance(model_admin, OrqUserAdminMixin):
        original = type(model_admin)
        swapped = type(
            original.__name__,
            (OrqUserAdminMixin, original),
            {
                "__module__": original.__module__,
                "__qualname__": original.__qualname__,
                "_orq_original_change_form_template": original.change_form_template,
            },
        )
        site.unregister(model)
        site.register(model, swapped)
        model_admin = site._registry[model]
    actions = list(model_admin.actions or [])
    if sync_to_orq not in actions:
        model_admin.actions = [*actions, sync_to_orq]
    return True
