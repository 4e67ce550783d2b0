from __future__ import annotations

from django.apps import AppConfig, apps
from django.utils.translation import gettext_lazy as _


class OrqContactsConfig(AppConfig):
    name = "django_orq_contacts"
    label = "django_orq_contacts"
    verbose_name = _("Orq contacts")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save, pre_delete

        from . import checks, receivers  # noqa: F401 - checks register themselves
        from .admin_actions import attach_to_user_admin

        user = get_user_model()
        # dispatch_uid: a second ready() (tests, autoreload) must not connect twice.
        post_save.connect(receivers.user_saved, sender=user, dispatch_uid="orq_contacts_saved")
        pre_delete.connect(
            receivers.user_deleting, sender=user, dispatch_uid="orq_contacts_deleting"
        )
        post_delete.connect(
            receivers.user_deleted, sender=user, dispatch_uid="orq_contacts_deleted"
        )
        # In case the admin autodiscovered before this app's admin module could attach.
        # A site without django.contrib.admin must still start.
        if apps.is_installed("django.contrib.admin"):
            attach_to_user_admin()
