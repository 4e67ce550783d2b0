"""ContactSync state and the sync service: versions and leases, the sweeper, backoff, failures,
exclusion and external id changes. In-process (PUBLISH="direct"), real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_orq_contacts import pausing, state, sync
from django_orq_contacts.models import ContactSync
from django_orq_contacts.testing.pytest_plugin import TEST_API_KEY

User = get_user_model()
PAST = dt.timedelta(minutes=-5)
FUTURE = dt.timedelta(minutes=5)


def configure(settings, **values):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, **values}


@pytest.fixture
def manual(settings):
    """No automatic sync: the test drives ``sync`` itself."""
    configure(settings, AUTO_SYNC=False)


def user_with_row(username, **row_fields):
    user = User.objects.create_user(username)
    state.mark_dirty(user.pk)
    if row_fields:
        ContactSync.objects.filter(user=user).update(**row_fields)
    return user


def sent(server, method="POST"):
    return [r.json()["metadata"]["username"] for r in server.api_requests(method)]


def in_thread(target):
    """Run ``target`` in a thread with its own database connection; return (thread, box)."""
    box: dict = {}

    def run():
        try:
            box["result"] = target()
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            box["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def joined(thread, box, timeout=10.0):
    thread.join(timeout)
    assert not thread.is_alive(), "thread did not finish"
    if "error" in box:
        raise box["error"]
    return box.get("result")


# -- versions and leases --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_save_while_a_call_is_in_flight_is_sent_after_it(orq_server):
    orq_server.add_fault("delay", seconds=0.8, method="POST", times=1)

    def save_during_the_call():
        deadline = time.monotonic() + 5
        while orq_server.stats()["in_flight"] == 0:
            assert time.monotonic() < deadline, "the first call never started"
            time.sleep(0.01)
        user = User.objects.get(username="ada")
        user.first_name = "Newer"
        user.save()
        return ContactSync.objects.get(user=user).status

    thread, box = in_thread(save_during_the_call)
    user = User.objects.create_user("ada", first_name="Older")  # syncs, slowly
    # The concurrent save found the row claimed: it left the work to the call in flight.
    assert joined(thread, box) == "pending"

    posts = orq_server.api_requests("POST")
    assert [r.json()["display_name"] for r in posts] == ["Older", "Newer"]
    assert orq_server.contact(str(user.pk))["display_name"] == "Newer"
    row = ContactSync.objects.get(user=user)
    assert row.status == "synced"
    assert row.synced_version == row.version


@pytest.mark.django_db
def test_a_row_claimed_by_another_worker_is_busy(manual, orq_server):
    user = user_with_row("ada")
    row = ContactSync.objects.get(user=user)
    claimed = state.claim(row.pk)
    assert claimed is not None
    assert state.claim(row.pk) is None
    result = sync.sync_user(user.pk)
    assert result.outcome == sync.BUSY
    assert orq_server.requests == []
    state.release(claimed[0], claimed[1])
    assert sync.sync_user(user.pk).outcome == sync.SYNCED


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over(manual, orq_server):
    user = user_with_row("ada", lease_token="dead-worker", lease_until=timezone.now() + PAST)
    result = sync.sync_user(user.pk)
    assert result.outcome == sync.SYNCED
    row = ContactSync.objects.get(user=user)
    assert (row.status, row.lease_token, row.lease_until) == ("synced", "", None)


@pytest.mark.django_db
def test_a_success_for_an_older_version_leaves_the_row_pending(manual):
    user = user_with_row("ada")
    row, token = state.claim(ContactSync.objects.get(user=user).pk)
    state.mark_dirty(user.pk)  # a save lands meanwhile
    assert (
        state.record_success(row, token, version=row.version, payload_hash="h", orq_id="x") is False
    )
    row.refresh_from_db()
    assert row.status == "pending"
    assert row.synced_version == row.version - 1
    assert row.next_attempt_at is not None


@pytest.mark.django_db
def test_the_unchanged_payload_makes_no_call(manual, orq_server):
    user = user_with_row("ada")
    assert sync.sync_user(user.pk).outcome == sync.SYNCED
    state.mark_dirty(user.pk)
    result = sync.sync_user(user.pk)
    assert (result.outcome, result.calls) == (sync.UNCHANGED, 0)
    assert sync.sync_user(user.pk, force=True).calls == 1
    assert len(orq_server.requests) == 2


# -- the sweeper ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_sweeper_picks_only_due_pending_and_retryable_failed_rows(manual, orq_server):
    now = timezone.now()
    user_with_row("due", next_attempt_at=now + PAST)
    user_with_row("not-yet", next_attempt_at=now + FUTURE)
    user_with_row("retryable", status="failed", attempts=8, next_attempt_at=now + PAST)
    user_with_row("permanent", status="failed", next_attempt_at=None)
    user_with_row("synced", status="synced", synced_version=1, next_attempt_at=None)
    user_with_row("leased", next_attempt_at=now + PAST, lease_token="t", lease_until=now + FUTURE)
    ContactSync.objects.create(
        user=None,
        external_id="deleted-user",
        operation="delete",
        synced_version=1,
        next_attempt_at=now + PAST,
    )

    results = sync.sync_due()

    assert sorted(sent(orq_server)) == ["due", "retryable"]
    assert [r.path for r in orq_server.api_requests("DELETE")] == ["/v2/contacts/deleted-user"]
    assert sorted(r.outcome for r in results) == ["deleted", "synced", "synced"]
    assert not ContactSync.objects.filter(external_id="deleted-user").exists()
    assert sync.sync_due() == []


@pytest.mark.django_db
def test_the_sweeper_respects_its_batch_limit(manual, orq_server):
    for i in range(5):
        user_with_row(f"u{i}", next_attempt_at=timezone.now() + PAST)
    assert len(sync.sync_due(limit=2)) == 2
    assert len(sync.sync_due(limit=10)) == 3
    assert len(orq_server.requests) == 5


def _due_rows(count):
    users = User.objects.bulk_create([User(username=f"due{i}") for i in range(count)])
    ContactSync.objects.bulk_create(
        [
            ContactSync(user=u, external_id=str(u.pk), next_attempt_at=timezone.now() + PAST)
            for u in users
        ]
    )


@pytest.mark.django_db(transaction=True)
def test_a_sweeper_skips_rows_another_sweeper_has_locked():
    _due_rows(12)
    a_claimed, b_done = threading.Event(), threading.Event()

    def sweeper_a():
        with transaction.atomic():
            mine = state.claim_due(5)
            a_claimed.set()
            # Still holding the row locks: B must get past them without waiting.
            b_finished_meanwhile = b_done.wait(10)
        return mine, b_finished_meanwhile

    def sweeper_b():
        assert a_claimed.wait(10)
        try:
            return state.claim_due(100)
        finally:
            b_done.set()

    thread_a, box_a = in_thread(sweeper_a)
    thread_b, box_b = in_thread(sweeper_b)
    mine, b_finished_meanwhile = joined(thread_a, box_a, timeout=20)
    theirs = joined(thread_b, box_b, timeout=20)
    assert b_finished_meanwhile
    assert len(mine) == 5
    assert len(theirs) == 7
    assert not {pk for pk, _ in mine} & {pk for pk, _ in theirs}


@pytest.mark.django_db(transaction=True)
def test_two_sweepers_racing_never_claim_the_same_row():
    _due_rows(30)
    barrier = threading.Barrier(2)

    def sweeper():
        barrier.wait(10)
        return [pk for pk, _ in state.claim_due(20)]

    (t1, b1), (t2, b2) = in_thread(sweeper), in_thread(sweeper)
    first, second = joined(t1, b1), joined(t2, b2)
    assert not set(first) & set(second)
    assert len(first) + len(second) == 30


# -- failures and backoff -----------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 30])
def test_backoff_stays_within_bounds(settings, attempt):
    configure(settings, RETRY_BACKOFF=2, RETRY_BACKOFF_MAX=600)
    full = min(600.0, 2.0 * 2 ** (attempt - 1))
    delays = [state.backoff(attempt) for _ in range(50)]
    assert all(full / 2 <= d <= full for d in delays)
    assert len(set(delays)) > 1  # jittered, so a crowd does not come back at once


def test_retry_after_is_a_floor_for_backoff(settings):
    configure(settings, RETRY_BACKOFF=1, RETRY_BACKOFF_MAX=10)
    assert state.backoff(1, retry_after=90) == 90
    assert 0.5 <= state.backoff(1, retry_after=0.1) <= 1


@pytest.mark.django_db
def test_transient_errors_back_off_then_show_failed_but_stay_retryable(
    manual, settings, orq_server
):
    configure(settings, MAX_RETRIES=3)
    user = user_with_row("ada")
    orq_server.add_fault("status", status=503, times=3)
    outcomes = []
    for expected_attempts in (1, 2, 3):
        result = sync.sync_user(user.pk)
        outcomes.append(result.outcome)
        row = ContactSync.objects.get(user=user)
        assert row.attempts == expected_attempts
        assert row.last_status_code == 503
        assert row.next_attempt_at is not None
        assert result.retry_in is not None
    assert outcomes == ["retry", "retry", "retry"]
    assert row.status == "failed"  # shown as failed once retries are used up...
    assert "OrqServerError" in row.last_error
    ContactSync.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now() + PAST)
    assert [r.outcome for r in sync.sync_due()] == ["synced"]  # ...yet the sweeper retries it
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error, row.last_status_code) == (
        "synced",
        0,
        "",
        None,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("status", [400, 422])
def test_a_rejected_payload_fails_permanently(manual, orq_server, status):
    user = user_with_row("ada")
    orq_server.add_fault("status", status=status, body='{"error": "bad ada@example.com"}')
    result = sync.sync_user(user.pk)
    assert (result.outcome, result.retry_in, result.status_code) == ("failed", None, status)
    row = ContactSync.objects.get(user=user)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 1, None)
    assert "ada@example.com" not in row.last_error
    assert sync.sync_due() == []
    assert len(orq_server.requests) == 1


@pytest.mark.django_db
def test_a_bad_api_key_fails_with_one_alert_in_the_log(manual, settings, orq_server, caplog):
    configure(settings, API_KEY="sk-wrong-key-123")
    sync._last_auth_alert = 0.0
    users = [user_with_row(f"u{i}") for i in range(3)]
    with caplog.at_level(logging.INFO, logger="django_orq_contacts"):
        results = [sync.sync_user(u.pk) for u in users]
    assert [r.status_code for r in results] == [401, 401, 401]
    assert all(r.outcome == "failed" for r in results)
    alerts = [r for r in caplog.records if "API key" in r.getMessage()]
    assert len(alerts) == 1
    assert "sk-wrong-key-123" not in caplog.text
    assert not ContactSync.objects.filter(last_error__contains="sk-wrong-key").exists()


@pytest.mark.django_db
def test_the_key_never_reaches_the_row_even_when_echoed(manual, orq_server):
    user = user_with_row("ada")
    orq_server.add_fault(
        "status", status=500, body=f"<pre>Authorization: Bearer {TEST_API_KEY}</pre>"
    )
    sync.sync_user(user.pk)
    row = ContactSync.objects.get(user=user)
    assert TEST_API_KEY not in row.last_error
    assert row.last_status_code == 500


# -- exclusion and external ids ------------------------------------------------------------------------


@pytest.mark.django_db
def test_excluded_user_is_deleted_remotely_and_comes_back_when_included(
    manual, settings, orq_server
):
    configure(settings, SHOULD_SYNC=lambda user: user.is_active)
    user = user_with_row("ada")
    assert sync.sync_user(user.pk).outcome == "synced"
    User.objects.filter(pk=user.pk).update(is_active=False)

    result = sync.sync_user(user.pk)
    assert (result.outcome, result.calls) == ("deleted", 1)
    assert orq_server.contacts() == []
    row = ContactSync.objects.get(user=user)
    assert (row.operation, row.status) == ("delete", "synced")
    assert sync.sync_user(user.pk).outcome == "skipped"  # nothing left to delete
    assert len(orq_server.api_requests("DELETE")) == 1

    User.objects.filter(pk=user.pk).update(is_active=True)
    assert sync.sync_user(user.pk).outcome == "synced"
    assert orq_server.contact(str(user.pk)) is not None


@pytest.mark.django_db
def test_excluded_user_is_only_skipped_without_delete_excluded(manual, settings, orq_server):
    configure(settings, SHOULD_SYNC=lambda user: user.is_active, DELETE_EXCLUDED=False)
    user = user_with_row("ada")
    sync.sync_user(user.pk)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert sync.sync_user(user.pk).outcome == "skipped"
    assert orq_server.contact(str(user.pk)) is not None
    assert orq_server.api_requests("DELETE") == []


@pytest.mark.django_db
def test_a_never_synced_excluded_user_costs_no_call(manual, settings, orq_server):
    configure(settings, SHOULD_SYNC=lambda user: False)
    user = user_with_row("ada")
    assert sync.sync_user(user.pk).outcome == "skipped"
    assert orq_server.requests == []


@pytest.mark.django_db
def test_a_changed_external_id_deletes_the_old_contact(manual, settings, orq_server):
    configure(settings, EXTERNAL_ID="username")
    user = user_with_row("ada")
    sync.sync_user(user.pk)
    user.username = "ada.lovelace"
    user.save()
    result = sync.sync_user(user.pk)
    assert (result.outcome, result.calls) == ("synced", 2)
    assert [r.path for r in orq_server.api_requests("DELETE")] == ["/v2/contacts/ada"]
    assert [c["external_id"] for c in orq_server.contacts()] == ["ada.lovelace"]
    assert ContactSync.objects.get(user=user).external_id == "ada.lovelace"


# -- deletes ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_a_synced_user_deletes_its_contact(orq_server, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        user = User.objects.create_user("ada")
    assert orq_server.contact(str(user.pk)) is not None
    with django_capture_on_commit_callbacks(execute=True):
        user.delete()
    assert orq_server.contacts() == []
    assert [r.method for r in orq_server.requests] == ["POST", "DELETE"]
    assert not ContactSync.objects.exists()


@pytest.mark.django_db
def test_a_user_deleted_before_any_attempt_costs_no_call(
    orq_server, django_capture_on_commit_callbacks
):
    with pausing.paused():
        user = User.objects.create_user("ada")
    assert ContactSync.objects.get(user=user).status == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        user.delete()
    assert orq_server.requests == []
    assert not ContactSync.objects.exists()


@pytest.mark.django_db
def test_a_user_whose_attempt_timed_out_still_gets_a_delete(
    settings, orq_server, django_capture_on_commit_callbacks
):
    # The server may have acted before the client gave up: the contact may exist.
    configure(settings, TIMEOUT=(2, 0.3))
    orq_server.add_fault("delay", seconds=0.6, method="POST")
    with django_capture_on_commit_callbacks(execute=True):
        user = User.objects.create_user("ada")
    assert ContactSync.objects.get(user=user).status == "pending"
    deadline = time.monotonic() + 5
    while orq_server.contact(str(user.pk)) is None:  # the slow POST lands after all
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with django_capture_on_commit_callbacks(execute=True):
        user.delete()
    assert orq_server.api_requests("DELETE")
    assert orq_server.contacts() == []


@pytest.mark.django_db
def test_a_user_gone_before_its_task_runs_is_not_an_error(manual, orq_server):
    user = user_with_row("ada")
    pk = user.pk
    User.objects.filter(pk=pk).delete()
    assert sync.sync_user(pk).outcome == sync.GONE
    assert sync.sync_user(999_999).outcome == sync.GONE
    assert orq_server.requests == []


def _mark_statements(queries):
    return [q["sql"] for q in queries if "contactsync" in q["sql"].lower()]


def _synchronous_commit():
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


# synchronous_commit is PostgreSQL's; elsewhere the mark is the same UPDATE, unrelaxed.
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="synchronous_commit is PostgreSQL's"
)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_save_in_autocommit_marks_its_row_in_one_relaxed_statement():
    user = User.objects.create_user("relaxed")
    ContactSync.objects.filter(user=user).update(
        status=ContactSync.Status.SYNCED, version=3, synced_version=3, next_attempt_at=None
    )
    session_setting = _synchronous_commit()
    with pausing.paused(), CaptureQueriesContext(connection) as queries:
        user.first_name = "Ada"
        user.save()
    row = ContactSync.objects.get(user=user)
    assert (row.status, row.version, row.operation) == ("pending", 4, "upsert")
    assert row.next_attempt_at is not None
    (mark,) = _mark_statements(queries)
    # The statement really commits relaxed: run it again, asking inside it.
    with connection.cursor() as cursor:
        cursor.execute(mark + " RETURNING current_setting('synchronous_commit')")
        assert cursor.fetchone()[0] == "off"
    # For the mark's own transaction only: the session keeps its setting.
    assert _synchronous_commit() == session_setting


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_save_inside_a_transaction_never_relaxes_the_callers_commit():
    user = User.objects.create_user("strict")
    session_setting = _synchronous_commit()
    with transaction.atomic(), pausing.paused(), CaptureQueriesContext(connection) as queries:
        user.first_name = "Grace"
        user.save()
        assert _synchronous_commit() == session_setting
    assert "set_config" not in " ".join(_mark_statements(queries))
    assert ContactSync.objects.get(user=user).version == 2


@pytest.mark.django_db(transaction=True)
def test_async_mark_commit_can_be_turned_off(settings):
    configure(settings, ASYNC_MARK_COMMIT=False)
    user = User.objects.create_user("flushed")
    with pausing.paused(), CaptureQueriesContext(connection) as queries:
        user.save()
    assert "set_config" not in " ".join(_mark_statements(queries))
    assert ContactSync.objects.get(user=user).version == 2


@pytest.mark.django_db(transaction=True)
def test_a_user_with_no_row_gets_one_on_its_next_save():
    user = User.objects.create_user("legacy")
    ContactSync.objects.filter(user=user).delete()  # as for users from before the app
    with pausing.paused():
        user.save()
    row = ContactSync.objects.get(user=user)
    assert (row.status, row.version, row.synced_version) == ("pending", 1, 0)
