"""``manage.py orq_sync_contacts``: every flag, the summary and the exit code.

The command syncs on worker threads with their own database connections, so these tests
commit for real (transaction=True).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from io import StringIO

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.utils import timezone

from django_orq_contacts import state
from django_orq_contacts.models import ContactSync

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()
SUMMARY = re.compile(r"^(Dry run\. )?([a-z ()]+: \d+(, )?)+; \d+ API call\(s\) in \d+\.\ds$")


def run(*args):
    """Run the command; return (summary line, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("orq_sync_contacts", "--no-progress", *args, stdout=out, stderr=err)
    lines = out.getvalue().strip().splitlines()
    assert SUMMARY.match(lines[-1]), lines[-1]
    return lines[-1], err.getvalue()


def bulk_users(*names, **fields):
    """Users made without signals: no ContactSync row, nothing sent."""
    return User.objects.bulk_create([User(username=name, **fields) for name in names])


def posted(server):
    return sorted(r.json()["metadata"]["username"] for r in server.api_requests("POST"))


def test_default_mode_syncs_bulk_created_users_then_skips_them(orq_server):
    bulk_users("ann", "bob", "cat", "dan")
    assert orq_server.requests == []
    assert not ContactSync.objects.exists()

    summary, _ = run()
    assert summary.startswith("synced: 4, unchanged: 0, failed: 0; 4 API call(s)")
    assert posted(orq_server) == ["ann", "bob", "cat", "dan"]
    assert set(ContactSync.objects.values_list("status", flat=True)) == {"synced"}

    orq_server.clear_requests()
    summary, _ = run()
    assert summary.startswith("synced: 0, unchanged: 4, failed: 0; 0 API call(s)")
    assert orq_server.requests == []

    summary, _ = run("--force")
    assert summary.startswith("synced: 4, unchanged: 0, failed: 0; 4 API call(s)")
    assert len(orq_server.requests) == 4


def test_dry_run_sends_nothing_and_changes_nothing(orq_server):
    synced = User.objects.create_user("old")
    bulk_users("ann", "bob")
    orq_server.clear_requests()
    before = list(ContactSync.objects.values())

    summary, _ = run("--dry-run")
    assert summary.startswith("Dry run. would sync: 2, synced: 0, unchanged: 1, failed: 0")
    assert orq_server.requests == []
    assert list(ContactSync.objects.values()) == before

    User.objects.filter(pk=synced.pk).update(first_name="Changed")  # no signal
    summary, _ = run("--dry-run", "--user", str(synced.pk))
    assert summary.startswith("Dry run. would sync: 1, synced: 0, unchanged: 0")
    assert orq_server.requests == []


def test_user_flag_is_repeatable(orq_server):
    ann, _, cat = bulk_users("ann", "bob", "cat")
    summary, _ = run("--user", str(ann.pk), "--user", str(cat.pk))
    assert summary.startswith("synced: 2,")
    assert posted(orq_server) == ["ann", "cat"]


def test_since_takes_users_changed_or_joined_after_a_date(orq_server):
    long_ago = timezone.make_aware(dt.datetime(2020, 1, 1))
    bulk_users("old1", "old2", date_joined=long_ago)
    bulk_users("new")
    summary, _ = run("--since", "2024-01-01")
    assert summary.startswith("synced: 1,")
    assert posted(orq_server) == ["new"]

    with pytest.raises(CommandError, match="not a date"):
        run("--since", "last tuesday")


def test_pending_syncs_pending_and_failed_rows_only(settings, orq_server):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "AUTO_SYNC": False}
    now = timezone.now()
    rows = {
        "pending-later": {"next_attempt_at": now + dt.timedelta(hours=1)},
        "failed-for-good": {"status": "failed", "next_attempt_at": None},
        "dead-worker": {"lease_token": "x", "lease_until": now - dt.timedelta(minutes=1)},
        "synced": {"status": "synced", "synced_version": 1},
        "in-flight": {"lease_token": "y", "lease_until": now + dt.timedelta(minutes=5)},
    }
    for name, fields in rows.items():
        user = User.objects.create_user(name)
        state.mark_dirty(user.pk)
        ContactSync.objects.filter(user=user).update(**fields)
    User.objects.create_user("no-row")

    summary, _ = run("--pending")
    assert summary.startswith("synced: 3, unchanged: 0, failed: 0; 3 API call(s)")
    assert posted(orq_server) == ["dead-worker", "failed-for-good", "pending-later"]

    with pytest.raises(CommandError, match="cannot be combined"):
        run("--pending", "--user", "1")


def test_concurrency_runs_calls_in_parallel(orq_server):
    orq_server.configure(latency=0.2)
    bulk_users(*[f"user{i}" for i in range(8)])
    summary, _ = run("--concurrency", "4")
    assert summary.startswith("synced: 8,")
    assert orq_server.stats()["max_in_flight"] >= 2
    assert len(orq_server.contacts()) == 8

    with pytest.raises(CommandError, match="at least 1"):
        run("--concurrency", "0")


def test_any_failure_exits_with_code_1_and_lists_the_user(orq_server, capsys):
    bulk_users("ann", "bob")
    orq_server.add_fault(
        "status", status=400, body='{"error": "bob@example.com rejected"}', path_contains="contacts"
    )
    command = load_command_class("django_orq_contacts", "orq_sync_contacts")
    with pytest.raises(SystemExit) as excinfo:
        command.run_from_argv(
            ["manage.py", "orq_sync_contacts", "--no-progress", "--concurrency=1"]
        )
    assert excinfo.value.code == 1
    out, err = capsys.readouterr()
    assert "synced: 1, unchanged: 0, failed: 1;" in out
    assert "1 user(s) failed to sync." in err
    assert "OrqPermanentError" in err
    assert "bob@example.com" not in out + err
    failed = ContactSync.objects.get(status="failed")
    assert failed.last_status_code == 400


def test_a_clean_run_exits_with_code_0(orq_server, capsys):
    bulk_users("ann")
    command = load_command_class("django_orq_contacts", "orq_sync_contacts")
    command.run_from_argv(["manage.py", "orq_sync_contacts", "--no-progress"])
    assert "synced: 1" in capsys.readouterr().out


@pytest.fixture
def broker_queue(settings):
    """Publish to the real broker (Redis) on a queue no worker consumes; yield a reader."""
    import tests.celery_app  # noqa: F401 - makes the project's Celery app the current one

    queue = f"{django_settings.ORQ_CONTACTS['QUEUE']}-enqueue-test"
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, "PUBLISH": "inline", "QUEUE": queue}
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.delete(queue)

    def messages():
        return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]

    yield messages
    client.delete(queue)
    client.close()


def test_enqueue_publishes_one_task_per_changed_user(orq_server, broker_queue):
    ann, bob, _ = bulk_users("ann", "bob", "cat", email="secret@example.com")
    summary, _ = run("--enqueue", "--user", str(ann.pk), "--user", str(bob.pk))
    assert "queued: 2" in summary
    assert orq_server.requests == []  # the workers make the calls, not the command

    messages = broker_queue()
    assert (
        sorted(m["headers"]["task"] for m in messages) == ["django_orq_contacts.sync_contact"] * 2
    )
    bodies = [base64.b64decode(m["body"]).decode() for m in messages]
    args = sorted(json.loads(body)[0][0] for body in bodies)
    assert args == sorted([str(ann.pk), str(bob.pk)])
    # Only primary keys travel: no email, no name, no key.
    readable = json.dumps([m["headers"] for m in messages]) + "".join(bodies)
    for secret in ("secret@example.com", '"ann"', django_settings.CANARY_API_KEY):
        assert secret not in readable
    assert ContactSync.objects.filter(status="pending").count() == 2


def test_migrations_are_complete():
    call_command("makemigrations", "django_orq_contacts", "--check", "--dry-run", verbosity=0)
