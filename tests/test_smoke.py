import json

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from django_orq_contacts.models import ContactSync

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


def test_create_update_delete(orq_server):
    user = User.objects.create_user("ada", email="ada@example.com", first_name="Ada", last_name="Lovelace")
    contact = orq_server.contact(str(user.pk))
    assert contact["email"] == "ada@example.com"
    assert contact["display_name"] == "Ada Lovelace"
    row = ContactSync.objects.get(user=user)
    assert row.status == "synced"
    user.email = ""
    user.save()
    assert orq_server.contact(str(user.pk))["email"] is None
    orq_server.clear_requests()
    user.last_login = user.date_joined
    user.save(update_fields=["last_login"])
    user.save()
    assert orq_server.api_requests() == []
    user.delete()
    assert orq_server.contact(str(user.pk)) is None
    assert not ContactSync.objects.exists()


def test_rollback_and_coalescing(orq_server):
    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.create_user("bob")
        raise RuntimeError
    assert orq_server.api_requests() == []
    with transaction.atomic():
        u = User.objects.create_user("carol")
        for i in range(5):
            u.first_name = f"C{i}"
            u.save()
    reqs = orq_server.api_requests()
    assert len(reqs) == 1
    assert json.loads(reqs[0].body)["display_name"] == "C4"
