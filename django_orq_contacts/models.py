"""ContactSync: the durable memory of what each user's Orq contact still needs.

The row is written in the same transaction as the user save, so a lost broker message, a
killed worker or exhausted retries never lose an update: the row stays pending until a
sweeper (or ``orq_sync_contacts --pending``) finishes the job.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.translation import gettext_lazy as _


class ContactSync(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        SYNCED = "synced", _("synced")
        FAILED = "failed", _("failed")

    class Operation(models.TextChoices):
        UPSERT = "upsert", _("create or update")
        DELETE = "delete", _("delete")

    # SET_NULL, not CASCADE: when the user is deleted the row must outlive it to carry the
    # pending delete of the remote contact.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="orq_contact_sync",
        verbose_name=_("user"),
    )
    external_id = models.CharField(_("external id"), max_length=255, db_index=True)
    operation = models.CharField(
        _("operation"), max_length=8, choices=Operation.choices, default=Operation.UPSERT
    )
    status = models.CharField(
        _("status"), max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    payload_hash = models.CharField(_("payload hash"), max_length=64, blank=True)
    orq_id = models.CharField(_("Orq id"), max_length=64, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    last_status_code = models.PositiveSmallIntegerField(
        _("last HTTP status"), null=True, blank=True
    )
    last_synced_at = models.DateTimeField(_("last synced at"), null=True, blank=True)
    # Bumped on every change that needs syncing; a sync records the version it read, so a
    # save that lands while a call is in flight is never mistaken for already synced.
    version = models.PositiveBigIntegerField(_("version"), default=1)
    synced_version = models.PositiveBigIntegerField(_("synced version"), default=0)
    # When the sweeper may next pick the row; NULL for a failure no retry can fix.
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    # A claim on the row by one worker, so two never send the same user at once; it expires
    # so a worker killed mid-call does not hold the user forever.
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("contact sync")
        verbose_name_plural = _("contact syncs")
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="orq_contactsync_due"),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.status})"


def quoted_column(connection: BaseDatabaseWrapper, name: str) -> str:
    """A ContactSync field's column, quoted for ``connection``: for the hand-written SQL of
    the hot paths (``state._bump``, ``batchwrite``), where the ORM costs too much."""
    field = ContactSync._meta.get_field(name)
    assert isinstance(field, models.Field)  # our own concrete columns
    return str(connection.ops.quote_name(str(field.column)))
