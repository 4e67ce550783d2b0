"""The test kit a project uses: the locmem outbox, fail_next, the TestCase mixin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import TestCase, TransactionTestCase

from django_orq_contacts.backends import locmem
from django_orq_contacts.exceptions import OrqPermanentError, OrqServerError
from django_orq_contacts.models import ContactSync
from django_orq_contacts.testing.testcases import OrqContactsTestMixin

User = get_user_model()


@pytest.mark.django_db(transaction=True)
def test_outbox_records_upserts_and_deletes(orq_outbox, orq_server):
    user = User.objects.create_user("ada", email="ada@example.com")
    pk = str(user.pk)
    user.delete()
    assert [(e.action, e.external_id) for e in orq_outbox] == [("upsert", pk), ("delete", pk)]
    assert orq_outbox[0].payload["email"] == "ada@example.com"
    assert orq_server.requests == []  # the network was never touched


@pytest.mark.django_db(transaction=True)
def test_fail_next_makes_the_next_call_fail_the_way_asked(orq_outbox):
    locmem.fail_next(OrqPermanentError("rejected", status=422))
    user = User.objects.create_user("bob", email="bob@example.com")
    row = ContactSync.objects.get(user=user)
    assert (row.status, row.last_status_code) == ("failed", 422)
    assert orq_outbox == []

    locmem.fail_next(OrqServerError("down", status=503))
    user.first_name = "Bob"
    user.save()
    row.refresh_from_db()
    assert row.status == "pending"  # transient: left for a retry
    assert row.next_attempt_at is not None


class MixinWithTestCase(OrqContactsTestMixin, TestCase):
    def setUp(self):
        super().setUp()
        # Saved outside the capture block: its on-commit callback never runs in a TestCase.
        self.user = User.objects.create_user("cy", email="cy@example.com")

    def test_save_inside_capture_block_is_synced(self):
        with self.captureOnCommitCallbacks(execute=True):
            self.user.email = "cy@example.org"
            self.user.save()
        self.assertEqual(len(self.orq_outbox), 1)
        self.assertEqual(self.orq_outbox[0].payload["email"], "cy@example.org")

    def test_fail_next(self):
        self.orq_fail_next(OrqPermanentError("nope", status=400))
        with self.captureOnCommitCallbacks(execute=True):
            self.user.first_name = "Cy"
            self.user.save()
        self.assertEqual(self.orq_outbox, [])
        self.assertEqual(ContactSync.objects.get(user=self.user).status, "failed")


class MixinWithTransactionTestCase(OrqContactsTestMixin, TransactionTestCase):
    def test_commit_syncs(self):
        User.objects.create_user("dee", email="dee@example.com")
        self.assertEqual([e.payload["email"] for e in self.orq_outbox], ["dee@example.com"])
