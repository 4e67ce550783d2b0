"""A TestCase mixin for Django's own test runner: no network, calls recorded in an outbox."""

from __future__ import annotations

from typing import Any

from django.test import override_settings

from ..backends import locmem


class OrqContactsTestMixin:
    """Use the locmem backend and sync right after commit, without Celery.

    ``self.orq_outbox`` lists the calls made (``OutboxEntry(action, external_id, payload)``);
    ``self.orq_fail_next(error)`` makes the next call raise. With ``TestCase`` (one
    transaction per test) wrap saves in ``self.captureOnCommitCallbacks(execute=True)``.
    """

    orq_contacts_settings: dict[str, Any] = {}
    _orq_override: Any

    def setUp(self) -> None:
        from django.conf import settings

        values = dict(getattr(settings, "ORQ_CONTACTS", {}) or {})
        values.update(
            BACKEND="django_orq_contacts.backends.locmem.LocmemBackend",
            PUBLISH="direct",
            **self.orq_contacts_settings,
        )
        self._orq_override = override_settings(ORQ_CONTACTS=values)
        self._orq_override.enable()
        locmem.reset()
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        locmem.reset()
        self._orq_override.disable()

    @property
    def orq_outbox(self) -> list[locmem.OutboxEntry]:
        return locmem.get_outbox()

    def orq_fail_next(self, error: BaseException, times: int = 1) -> None:
        locmem.fail_next(error, times)
